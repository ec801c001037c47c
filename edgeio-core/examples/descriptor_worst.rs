//! How long the descriptor parser takes on the worst shapes of input under the size limit
//! (1 MiB) that we know: deep flow and block nesting, long keys, many aliases, huge numbers,
//! many small documents. Every one must be accepted or refused within 50 ms on the reference
//! machine (2 cores); the figure for a plain descriptor is printed beside them.
//!
//! ```text
//! cargo run --release -p edgeio-core --features testing --example descriptor_worst
//! ```

use edgeio_core::job::{parse_descriptor, MAX_DESCRIPTOR_BYTES};
use edgeio_core::model::KnownRuntimes;
use std::time::Instant;

fn main() {
    let known = KnownRuntimes::default();
    println!("{:<34} {:>9} {:>10}  answer", "shape", "bytes", "ms");
    for (name, text) in edgeio_core::testing::hostile::descriptors(MAX_DESCRIPTOR_BYTES) {
        let started = Instant::now();
        let answer = parse_descriptor(text.as_bytes(), &known);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let answer = match answer {
            Ok(_) => "accepted".to_string(),
            Err(e) => {
                let mut text = e.to_string();
                text.truncate(70);
                text
            }
        };
        let flag = if ms > 50.0 { "  OVER 50 ms" } else { "" };
        println!("{name:<34} {:>9} {ms:>10.2}  {answer}{flag}", text.len());
    }
}
