//! URLs as the client shows them: credentials and query strings redacted for logs and
//! errors (tokens travel in both).

/// The authority of `url` (after `scheme://`, before the path), and where it starts.
fn authority(url: &str) -> (usize, &str) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    (start, &rest[..end])
}

/// Whether `url` carries credentials (`user[:password]@host`).
pub fn url_has_credentials(url: &str) -> bool {
    authority(url).1.contains('@')
}

/// `url` as it may be shown in a log line or an error: credentials (`user:password@`)
/// become `<redacted>@` and a query string becomes `?<redacted>` (tokens travel in both).
pub fn redact_url(url: &str) -> String {
    let (start, auth) = authority(url);
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..start]);
    match auth.rsplit_once('@') {
        Some((_, host)) => {
            out.push_str("<redacted>@");
            out.push_str(host);
        }
        None => out.push_str(auth),
    }
    let rest = &url[start + auth.len()..];
    match rest.split_once('?') {
        Some((path, _)) => {
            out.push_str(path);
            out.push_str("?<redacted>");
        }
        None => out.push_str(rest),
    }
    out
}
