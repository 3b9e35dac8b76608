//! The remote remix API: the HTTP client ([`client`]), the pure reading of its answers
//! ([`response`]), the gate every request passes ([`gate`]: pacing, pauses, the day's
//! budget), and the guard that keeps downloads on public addresses ([`public_only`]). The
//! dry-run provider never reaches this module's network code; see
//! [`crate::pipeline::dry_run`].

pub mod billing;
pub mod client;
pub mod gate;
pub mod public_only;
pub mod response;
pub mod usage;

pub use client::ApiClient;
pub use gate::Gate;
pub use response::{Answer, Outcome, OutputItem, PauseReason, classify};
