//! The smallest producer: opens the queue directory given as the first argument (default
//! `./queue`) and enqueues one escalation. Its stripped release size is the figure
//! `docs/ARCHITECTURE.md` ("Dependencies") reports for a process that only enqueues.

use escalation_queue_producer::{Escalation, EscalationQueue, ImageSource};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "queue".to_owned());
    let queue = EscalationQueue::open(&dir)?;
    let jpeg = b"\xff\xd8\xff\xe0 a small image".to_vec();
    let receipt = queue.enqueue(&Escalation::new(
        "det_123",
        ImageSource::Inline(jpeg.into()),
    ))?;
    println!("queued {} in lane {}", receipt.image_query_id, receipt.lane);
    Ok(())
}
