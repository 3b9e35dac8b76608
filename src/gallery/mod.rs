//! The gallery: static pages beside the job folders so people see each original next to its
//! outputs, and why a job went to the quarantine. `outbox/index.html`, `index-2.html`, … (every
//! published job, newest first, 100 a page, with a "now" box on the first), the same for each
//! `{subdir}` at `outbox/SUBDIR/index.html`, the stylesheet at `outbox/.remixd-gallery/`, and
//! `quarantine/index.html`. These are the only files remixd writes outside job folders.
//!
//! A job's end is recorded once as a row in this process's log in the work area
//! ([`store`]); a writer task ([`Gallery::run`]) reads every process's log incrementally and
//! rewrites the pages a row changed, debounced by `output.gallery_delay`, never re-reading job
//! folders. Pages are replaced whole by a rename; a page is never torn.
//!
//! The module leaves the jobs themselves alone: it only reads what the pipeline already wrote.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::config::Config;
use crate::job::SourceRef;

mod history;
mod now;
mod render;
mod row;
mod store;
mod task;

pub use history::{Ended, History, history};
pub(crate) use now::{jobs_folders, stage_counts};
pub use task::Live;

/// The folder of the owners' logs under the work area.
const LOGS_DIR: &str = "gallery";

/// A handle on the gallery, cheap to clone: jobs report their end through it, the intake its
/// count of waiting files, and [`Gallery::run`] writes the pages.
#[derive(Debug, Clone)]
pub struct Gallery {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    owner: String,
    logs: PathBuf,
    work_dir: PathBuf,
    outbox: PathBuf,
    quarantine: PathBuf,
    /// Something the pages show has changed.
    changed: Notify,
    waiting: AtomicUsize,
}

impl Gallery {
    /// The gallery of `config`'s folders, logging this process's rows as `owner_id`.
    #[must_use]
    pub fn new(config: &Config, owner_id: &str) -> Self {
        Self {
            shared: Arc::new(Shared {
                owner: owner_id.to_owned(),
                logs: config.work_dir.join(LOGS_DIR),
                work_dir: config.work_dir.clone(),
                outbox: config.outbox.clone(),
                quarantine: config.quarantine.clone(),
                changed: Notify::new(),
                waiting: AtomicUsize::new(0),
            }),
        }
    }

    /// A job ended in `dest` (a folder in the outbox or the quarantine, `metadata.json` or
    /// `error.json` in it): its row is logged for every process's pages. Failing to log is
    /// only warned about: the pages are a view, the job is done.
    pub fn job_ended(&self, dest: &Path, source: &SourceRef) {
        let s = &self.shared;
        let root = if dest.starts_with(&s.outbox) {
            &s.outbox
        } else {
            &s.quarantine
        };
        let Some(row) = row::Row::read(root, dest, source) else {
            tracing::warn!(dir = %dest.display(), "the gallery could not read this job's metadata.json or error.json; it will not show on the pages");
            return;
        };
        if let Err(e) = store::append(&s.logs, &s.owner, &row) {
            tracing::warn!(error = %e, dir = %s.logs.display(), "could not log a job for the gallery pages");
        }
        s.changed.notify_one();
    }

    /// Something the "now" box shows changed (a job started or moved on).
    pub fn touch(&self) {
        self.shared.changed.notify_one();
    }

    /// How many files wait in the inbox, for the "now" box.
    pub fn set_waiting(&self, files: usize) {
        if self.shared.waiting.swap(files, Ordering::Relaxed) != files {
            self.shared.changed.notify_one();
        }
    }
}
