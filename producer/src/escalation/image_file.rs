//! Reading a path image without trusting the path: the reader holds the API token and may
//! run with more privileges than the process that enqueued the record, so the path a record
//! names is confined to the configured images directory (`docs/SEMANTICS.md` §12, "Path
//! images").
//!
//! The rules, each checked by the reader when it loads the image (a writer's record is not
//! trusted to have been checked at enqueue):
//! * path images are off unless an images directory is configured;
//! * the path is absolute and lies lexically under the images directory, with no `..` or `.`
//!   component;
//! * it is opened one component at a time with `openat` from the directory's descriptor and
//!   `O_NOFOLLOW`, so no symbolic link is followed anywhere below the directory (a link is
//!   refused even when it points back inside), and `O_NONBLOCK`, so a FIFO cannot hang it;
//! * the opened file must be a regular file with exactly one link (a hard link to a file
//!   elsewhere, such as `/etc/shadow`, is refused), no larger than `image_size_max_bytes`;
//! * at most `image_size_max_bytes + 1` bytes are read, whatever `fstat` said.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path};

use bytes::Bytes;
use rustix::fs::{Mode, OFlags};

use super::validate::{self, RecordLimits};
use super::ImageError;

/// The images directory and the components of `path` below it, or why `path` is refused
/// (the reason completes "image path … is refused: ").
pub(super) fn confine<'a, 'b>(
    path: &'a Path,
    limits: &'b RecordLimits,
) -> Result<(&'b Path, Vec<&'a OsStr>), String> {
    let Some(dir) = &limits.images_dir else {
        return Err(
            "path images are off because no images directory is configured \
             (set queue.images_dir, or enqueue the image inline)"
                .to_owned(),
        );
    };
    Ok((dir, relative_components(dir, path)?))
}

/// The components of `path` below `dir`, each a plain file name.
fn relative_components<'a>(dir: &Path, path: &'a Path) -> Result<Vec<&'a OsStr>, String> {
    let outside = || format!("it is not inside the images directory {}", dir.display());
    let rest = path.strip_prefix(dir).map_err(|_| outside())?;
    let mut names = Vec::new();
    for component in rest.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::ParentDir => {
                return Err(format!(
                    "it has a `..` component (allowed: plain names below {})",
                    dir.display()
                ))
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => return Err(outside()),
        }
    }
    if names.is_empty() {
        return Err(format!(
            "it names the images directory {} itself, not a file in it",
            dir.display()
        ));
    }
    Ok(names)
}

/// Loads `path` by the rules in the module docs.
pub(super) fn read(path: &Path, limits: &RecordLimits) -> Result<Bytes, ImageError> {
    let refused = |reason: String| ImageError::Refused {
        path: path.to_owned(),
        reason,
    };
    let (dir, names) = confine(path, limits).map_err(refused)?;
    let unreadable = |source: io::Error| ImageError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    // The images directory itself is the operator's configuration: it may be a symlink.
    let mut fd = rustix::fs::open(dir, dir_flags, Mode::empty())
        .map_err(|e| unreadable(io::Error::from(e)))?;
    let Some((last, parents)) = names.split_last() else {
        return Err(refused("it names no file".to_owned()));
    };
    for name in parents {
        fd = rustix::fs::openat(&fd, *name, dir_flags | OFlags::NOFOLLOW, Mode::empty()).map_err(
            |e| match e {
                rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => refused(format!(
                    "its component {name:?} is a symbolic link or not a directory \
                     (links are never followed below the images directory)"
                )),
                e => unreadable(io::Error::from(e)),
            },
        )?;
    }
    let file_flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&fd, *last, file_flags | OFlags::NOCTTY, Mode::empty()).map_err(
        |e| match e {
            rustix::io::Errno::LOOP => refused(
                "it is a symbolic link (links are never followed below the images directory)"
                    .to_owned(),
            ),
            e => unreadable(io::Error::from(e)),
        },
    )?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.file_type().is_file() {
        return Err(refused(format!(
            "it is {}, not a regular file",
            kind_of(meta.file_type())
        )));
    }
    if meta.nlink() != 1 {
        return Err(refused(format!(
            "it has {} hard links (allowed: 1; a link to a file outside the images directory \
             would expose that file)",
            meta.nlink()
        )));
    }
    let max_bytes = limits.image_size_max_bytes;
    if meta.len() > u64::try_from(max_bytes).unwrap_or(u64::MAX) {
        return Err(ImageError::Invalid(
            validate::ValidationError::ImageTooLarge {
                size_bytes: usize::try_from(meta.len()).unwrap_or(usize::MAX),
                max_bytes,
            },
        ));
    }
    let cap = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut image = Vec::new();
    file.take(cap).read_to_end(&mut image).map_err(unreadable)?;
    validate::check_image_size(image.len(), limits)?;
    Ok(Bytes::from(image))
}

fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    }
}
