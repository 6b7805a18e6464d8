//! The Rust side of `py/bench/enqueue_bench.py`: the same enqueues as the Python side, from
//! Rust, so the two are compared in one run on one file system.
//!
//! `enqueue_latency <queue_dir> <count> <image_bytes> <threads>` enqueues `count`
//! escalations with an inline image of `image_bytes` (split across `threads` threads on
//! one handle) and prints one JSON line: every latency in microseconds (sequential runs)
//! and the wall time.

use std::time::Instant;

use escalation_queue_producer::{Escalation, EscalationQueue, ImageSource};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, count, image_bytes, threads] = args.as_slice() else {
        return Err("usage: enqueue_latency <queue_dir> <count> <image_bytes> <threads>".into());
    };
    let (count, image_bytes, threads): (usize, usize, usize) =
        (count.parse()?, image_bytes.parse()?, threads.parse()?);
    let queue = EscalationQueue::open(dir)?;
    let mut image = vec![0xa5_u8; image_bytes];
    image[..3].copy_from_slice(b"\xff\xd8\xff");
    // Built once; a clone shares the bytes (what a Rust caller holding `Bytes` does).
    let image = ImageSource::Inline(image.into());
    let started = Instant::now();
    let per_thread = count / threads.max(1);
    let latencies: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                let (queue, image) = (queue.clone(), image.clone());
                s.spawn(move || {
                    let mut out = Vec::with_capacity(per_thread);
                    for _ in 0..per_thread {
                        let esc = Escalation::new("det_bench", image.clone());
                        let t = Instant::now();
                        queue.enqueue(&esc).expect("enqueue");
                        out.push(t.elapsed().as_micros() as u64);
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let wall_s = started.elapsed().as_secs_f64();
    let list: Vec<String> = latencies.iter().map(u64::to_string).collect();
    println!(
        "{{\"wall_s\": {wall_s}, \"latencies_us\": [{}]}}",
        list.join(",")
    );
    Ok(())
}
