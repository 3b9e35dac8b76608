//! remixd: a daemon that turns a shared folder into a queue for the Ideogram 3.0 Remix API.
//!
//! The modules follow a job's life:
//!
//! - entry: [`cli`] (arguments and exit statuses), [`config`] (YAML in, resolved config out)
//! - inbox: [`watch`] (native events, polling, rescans), [`inbox`] (what a path is, settling),
//!   [`sidecar`] (prompt files and `_defaults.yaml`), [`image_info`] (format and size from bytes)
//! - a job: [`job`] (id, stage), [`journal`] (the job's durable record), [`claim`] (inbox →
//!   work area), [`api`] (the remote API and the dry-run provider), [`download`] (outputs),
//!   [`publish`] (outbox and `metadata.json`), [`quarantine`] (reasons and `error.json`),
//!   [`lease`] (this process's part of the work area, takeover of dead processes' jobs),
//!   [`gallery`] (the outbox's and quarantine's `index.html` pages)
//! - plumbing: [`daemon`] (the spine), [`pipeline`] (one job from claim to its end),
//!   [`gate`] (API pacing, pauses), [`shutdown`], [`systemd`], [`logging`], [`events`] (log
//!   event names), [`prepare`] (checks before sending),
//!   [`fsx`] (durable writes and renames), [`error`] (fatal errors and exit statuses),
//!   [`secrets`] (the key scrubbed from all output), [`text`] (cutting and escaping names),
//!   [`requeue`] and [`check`] (the other subcommands).

pub mod api;
pub mod check;
pub mod claim;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod download;
pub mod error;
pub mod events;
pub mod fsx;
pub mod gallery;
pub mod gate;
pub mod image_info;
pub mod inbox;
pub mod job;
pub mod journal;
pub mod lease;
pub mod logging;
pub mod pipeline;
pub mod prepare;
pub mod publish;
pub mod quarantine;
pub mod requeue;
pub mod secrets;
pub mod shutdown;
pub mod sidecar;
pub mod systemd;
pub mod text;
pub mod watch;

/// The version recorded in metadata, error files and logs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
