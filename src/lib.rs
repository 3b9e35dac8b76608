//! remixd: a daemon that turns a shared folder into a queue for the Ideogram 3.0 Remix API.
//!
//! The modules, in the order a job meets them:
//!
//! - start: [`cli`] (arguments, subcommands, exit statuses), [`config`] (raw YAML → resolved
//!   config; folder checks; reload on SIGHUP), [`daemon`] (the spine: run, drain),
//!   [`shutdown`] (stop tokens, signals, the job tracker)
//! - intake: [`inbox`] (what a path is; `watch`: events, polls, rescans; `settle`: the
//!   settle, sidecar, mask and orphan deadlines; `intake_loop`: sleeps until one is due,
//!   dispatch), [`sidecar`] (prompt files, `_defaults.yaml`, masks: reader, fields,
//!   operation, request), [`image_info`] (format and size from bytes)
//! - a job: [`job`] (id, stage, record; `describe`: what an input is; `verdict`: why it is
//!   quarantined; `journal`: its durable record; `lease`: whose it is), [`pipeline`] (the
//!   stage machine, one room per stage: `claim` (with `references`, the copies it makes),
//!   `prepare`, `submit` or `dry_run`, `download`, `publish` or `quarantine`, `finish`),
//!   [`api`] (`client`; `response`: what an answer means; `gate`: pacing, pauses, shares;
//!   `usage`: the day's count over every process; `billing`: what may have been billed and
//!   its price; `public_only`: the download address guard)
//! - for the people who drop files: [`gallery`] (the outbox's and quarantine's `index.html`)
//! - for the operators: [`status`] (`remixd status`, and the state each process publishes
//!   for it), [`metrics`] (the Prometheus textfile), [`progress`] (`--once`'s bar)
//! - plumbing: [`fsx`] (durable writes and renames, what `lstat` says), [`clock`] (RFC
//!   3339, the UTC day), [`text`] (cutting and escaping names), [`secrets`] (the key scrubbed
//!   from all output), [`events`] (log event names), [`logging`], [`systemd`], [`error`]
//!   (fatal errors)
//! - the other subcommands: [`check`], [`requeue`]

pub mod api;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod error;
pub mod events;
pub mod fsx;
pub mod gallery;
pub mod image_info;
pub mod inbox;
pub mod job;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod requeue;
pub mod secrets;
pub mod shutdown;
pub mod sidecar;
pub mod status;
pub mod systemd;
pub mod text;

/// The version recorded in metadata, error files and logs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
