//! remixd's integration tests: the real `remixd` binary as a child process, a fake Ideogram
//! server on loopback, and real folders in a temporary directory, checked only from outside
//! (files, exit statuses, JSON log lines), as SPEC.md describes them.
//!
//! Harness modules: [`env`] (folders and config), [`fake_api`] (the remote API),
//! [`images`] (small real image files), [`daemon`] (the child process and its logs),
//! [`asserts`] (outbox, quarantine and "nothing lost" checks). The other modules are the tests,
//! one file per theme.

// Test code: panicking on a broken harness is the point.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc, missing_docs)]
// Test docs quote SPEC.md verbatim; backticks there would change the quotes.
#![allow(clippy::doc_markdown)]

mod asserts;
mod daemon;
mod env;
mod fake_api;
mod images;

mod billing;
mod cli;
mod crash;
mod disk;
mod fleet;
mod fuzz;
mod gallery;
mod hostile;
mod inbox;
mod logs;
mod many;
mod metrics;
mod modes;
mod operations;
mod outage;
mod pipeline;
mod progress;
mod quarantine;
mod references;
mod retries;
mod sidecars;
mod signals;
mod status;
mod systemd;
