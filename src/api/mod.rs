//! The remote remix API: the HTTP client ([`client`]), the pure reading of its answers
//! ([`response`]), and the providers' differences. The dry-run provider never reaches this
//! module's network code; see [`crate::pipeline`].

pub mod client;
pub mod response;

pub use client::ApiClient;
pub use response::{Answer, Outcome, OutputItem, PauseReason, classify};
