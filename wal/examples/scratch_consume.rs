use escalation_queue_wal::*;
use std::time::*;
fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(300_000, |s| s.parse().unwrap());
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let o = Options::default().free_disk_bytes_min(0);
    {
        let w = Writer::open(dir.path(), &o.clone().durability(Durability::None)).unwrap();
        let rec = vec![7u8; 1024];
        for _ in 0..n {
            w.append(&rec).unwrap();
        }
    }
    let mut r = Reader::open(dir.path(), "b", &o).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    let mut k = 0u64;
    let mut ck = Duration::ZERO;
    let mut nx = Duration::ZERO;
    loop {
        let t0 = Instant::now();
        let Some(rec) = r.next().unwrap() else { break };
        nx += t0.elapsed();
        std::hint::black_box(&rec.payload);
        r.ack(rec.id).unwrap();
        k += 1;
        if k % 1000 == 0 {
            let t1 = Instant::now();
            r.checkpoint().unwrap();
            ck += t1.elapsed();
        }
    }
    eprintln!("next {nx:?} checkpoint {ck:?}");
    r.checkpoint().unwrap();
    println!(
        "{k} in {:?}: {:.0}/s",
        t.elapsed(),
        k as f64 / t.elapsed().as_secs_f64()
    );
}
