use escalation_queue_wal::*;
use std::time::*;
fn main() {
    let threads: usize = std::env::args().nth(1).map_or(1, |s| s.parse().unwrap());
    let slow: u64 = std::env::args().nth(2).map_or(0, |s| s.parse().unwrap());
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let mut o = Options::default().free_disk_bytes_min(0);
    if slow > 0 {
        o = o.storage(std::sync::Arc::new(SlowSyncStorage::new(
            std::sync::Arc::new(RealStorage),
            Duration::from_micros(slow),
        )));
    }
    let w = Writer::open(dir.path(), &o).unwrap();
    let rec = vec![7u8; 1024];
    let t = Instant::now();
    let n = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while t.elapsed() < Duration::from_secs(2) {
                    w.append(&rec).unwrap();
                    n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    println!("{:.0}/s", n.into_inner() as f64 / t.elapsed().as_secs_f64());
}
