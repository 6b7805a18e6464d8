//! `escalation-queue`: the reader daemon and operator commands (in progress).
#![forbid(unsafe_code)]

fn main() {
    println!("escalation-queue {}", env!("CARGO_PKG_VERSION"));
}
