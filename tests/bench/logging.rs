//! What one JSON log line costs: nanoseconds and heap allocations per line, for a job event
//! inside a job's span (as every job line is), with the key registered for scrubbing.
//!
//!   cargo test --release --test log_bench     # prints the figures; asserts nothing
//!
//! Allocations are counted by a counting global allocator, so the figure is exact and the
//! same on every machine; the time is a median of 5 rounds.

#![allow(unsafe_code, missing_docs, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tracing::{info, info_span};
use tracing_subscriber::layer::SubscriberExt;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const LINES: u64 = 100_000;

fn main() {
    remixd::secrets::register("sk-bench-Qz7wX2vLk9-secret");
    let layer = remixd::logging::JsonLayer::new(io::sink);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let span = info_span!(
            "job",
            job_id = "01KB8Z3X9Q4T7V2M5N6P8R0S1W",
            file = "d3/img1234.png"
        );
        let _entered = span.enter();
        let mut rounds = Vec::new();
        let mut allocations = 0;
        for round in 0..6 {
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            let start = Instant::now();
            for attempt in 0..LINES {
                info!(event = "job.submitted", attempt, http_status = 200u16,
                    dir = %"outbox/d3/img1234-01KB8Z3X9Q4T7V2M5N6P8R0S1W", "sending the request");
            }
            let ns = start.elapsed().as_nanos() as f64 / LINES as f64;
            if round > 0 {
                rounds.push(ns);
                allocations = (ALLOCATIONS.load(Ordering::Relaxed) - before) / LINES;
            }
        }
        rounds.sort_by(f64::total_cmp);
        println!(
            "one job log line (4 event fields, 2 span fields, key scrubbed): {:.0} ns median of 5 rounds, {allocations} allocations",
            rounds[2]
        );
    });
}
