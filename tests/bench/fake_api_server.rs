//! The integration tests' fake Ideogram API as a process of its own, for benchmarks and
//! system tests that run remixd outside the test binary: it answers every remix at once
//! (kkiai authentication, the test key) and serves the outputs, until stdin closes.
//!
//!   cargo test --release --test fake_api_server --no-run   # builds it
//!   fake_api_server [PORT]                                  # prints "listening on URL"

#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::missing_panics_doc
)]

#[path = "../it/fake_api.rs"]
mod fake_api;
#[path = "../it/images.rs"]
mod images;

/// What fake_api.rs takes from the test environment.
mod env {
    use sha2::{Digest, Sha256};

    pub use crate::KEY as API_KEY;

    pub fn sha256(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }
}

/// The key the fake accepts (the integration tests' own).
pub const KEY: &str = "sk-test-Qz7wX2vLk9";

fn main() {
    let port = std::env::args()
        .nth(1)
        .map_or(0, |p| p.parse().expect("PORT is a number"));
    let api = fake_api::FakeApi::start_on(fake_api::Mode::Kkiai, port);
    println!("listening on {}", api.url());
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
        sink.clear();
    }
}
