//! The journal: one `job.json` per job folder, rewritten durably at every stage change.
//!
//! A job folder is `<work_dir>/owners/<owner>/jobs/<job_id>/` (see [`super::lease`]) holding `job.json` and `files/` (the claimed
//! input, its sidecar, downloaded outputs, then `metadata.json` or `error.json`). The order of
//! durable steps, and what each must have synced before the next may start:
//!
//! 1. Create the job folder and `files/` (parent folders synced), write `job.json` with stage
//!    `claiming`, naming the input and sidecar: recovery can now finish or undo the claim.
//! 2. Rename the input, then the sidecar, from the inbox into `files/`; sync `files/` and the
//!    inbox folder. The rename of the input decides who owns it. Reference images are the
//!    one thing copied: streamed into `refs/` (each file synced, then the folder once).
//! 3. Journal `claimed`. Then, before each request, journal `submitting {attempt}`; a crash
//!    here means the request may or may not have reached the API, and recovery sends it again
//!    (logged as `job.resubmitted`): there is no answer to reuse.
//! 4. Journal `responded {answer}` (synced) before downloading anything: from here the job is
//!    never submitted again; recovery downloads the recorded URLs.
//! 5. Each output goes to a `.part` file, synced, checked, renamed to its final name, and
//!    `files/` synced; a `.part` left by a crash is discarded and fetched again.
//! 6. Write `metadata.json` (or `error.json`) into `files/` durably, journal `publishing
//!    {dest}` (or `quarantining {dest, error}`), then move `files/` to `dest` in one rename
//!    (or a synced copy and rename across filesystems), sync both parents.
//!    Across filesystems the move is a copy into a hidden `.remixd-incoming-*` folder beside
//!    `dest` (each file and the folder synced), one rename to `dest`, then the source removed;
//!    recovery that finds both `dest` (naming this job in its `metadata.json`/`error.json`) and
//!    `files/` only removes `files/`. Before step 6 remixd's own dot-named temporaries are
//!    removed from `files/`, so none reaches the outbox.
//! 7. Remove the job folder (only `job.json` is left in it). A crash between 6 and 7 is seen at
//!    recovery as a `publishing` job whose `files/` is gone: it only needs removing.
//!
//! A local failure at any step (no space, read-only) leaves the journal as it was; the job waits
//! and retries the step, and no new input is claimed meanwhile.

use std::fs;
use std::path::{Path, PathBuf};

use super::{JOURNAL_FORMAT, JobId, JobRecord};
use crate::fsx::{self, Context, FsError};

/// The folder under the work area that holds job folders.
pub const JOBS_DIR: &str = "jobs";
const JOURNAL_FILE: &str = "job.json";
const FILES_DIR: &str = "files";
const REFS_DIR: &str = "refs";

/// Why a journal could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] FsError),
    /// The file is not a journal this build understands.
    #[error("{path}: not a readable job journal: {problem}")]
    Corrupt {
        /// The journal file.
        path: String,
        /// The parser's message.
        problem: String,
    },
}

/// One job's folder in the work area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDir {
    root: PathBuf,
}

impl JobDir {
    /// The folder for `job_id` in the jobs folder `jobs`.
    #[must_use]
    pub fn new(jobs: &Path, job_id: &JobId) -> Self {
        Self {
            root: jobs.join(job_id.as_str()),
        }
    }

    /// Whether the folder is still there: a job folder that vanished was taken over by
    /// another process after this one's lease expired.
    #[must_use]
    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    /// The job folder itself.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `files/`: what ends in the outbox or quarantine.
    #[must_use]
    pub fn files(&self) -> PathBuf {
        self.root.join(FILES_DIR)
    }

    /// `refs/`: the copies of the reference images, sent by every attempt and never moved
    /// with `files/`.
    #[must_use]
    pub fn refs(&self) -> PathBuf {
        self.root.join(REFS_DIR)
    }

    fn journal_path(&self) -> PathBuf {
        self.root.join(JOURNAL_FILE)
    }

    /// Creates the job folder and `files/`, syncing their parents.
    pub fn create(&self) -> Result<(), FsError> {
        fsx::create_dir_all_durable(&self.files()).context("creating the job folder", &self.root)
    }

    /// Writes the journal durably.
    pub fn write(&self, record: &JobRecord) -> Result<(), FsError> {
        let path = self.journal_path();
        // Not scrubbed: the journal keeps the answer exactly, so a resumed job can use it.
        fsx::write_json(&path, record, std::convert::identity)
            .context("writing the job journal", &path)
    }

    /// Reads the journal.
    pub fn read(&self) -> Result<JobRecord, JournalError> {
        let path = self.journal_path();
        let bytes = fs::read(&path).context("reading the job journal", &path)?;
        let record: JobRecord =
            serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt {
                path: path.display().to_string(),
                problem: e.to_string(),
            })?;
        if record.format > JOURNAL_FORMAT {
            return Err(JournalError::Corrupt {
                path: path.display().to_string(),
                problem: format!("written by a newer remixd (format {})", record.format),
            });
        }
        Ok(record)
    }

    /// Whether the journal file exists.
    #[must_use]
    pub fn has_journal(&self) -> bool {
        self.journal_path().exists()
    }

    /// Removes the job folder once its files have gone to the outbox or quarantine. Refuses
    /// (leaves everything) if `files/` still holds anything.
    pub fn remove(&self) -> Result<(), FsError> {
        let files = self.files();
        match fs::remove_dir(&files) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).context("removing a finished job's files folder", &files)?;
            }
            _ => {}
        }
        let refs = self.refs();
        match fs::remove_dir_all(&refs) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).context("removing a finished job's reference copies", &refs)?;
            }
            _ => {}
        }
        let journal = self.journal_path();
        if journal.exists() {
            fs::remove_file(&journal).context("removing a finished job journal", &journal)?;
        }
        // A journal write cut short leaves its temporary file beside job.json.
        if let Ok(entries) = fs::read_dir(&self.root) {
            for entry in entries.filter_map(Result::ok) {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        fs::remove_dir(&self.root).context("removing a finished job folder", &self.root)?;
        if let Some(parent) = self.root.parent() {
            fsx::sync_dir(parent).context("syncing the work area", parent)?;
        }
        Ok(())
    }
}

/// Every job folder in the jobs folder `jobs`, oldest id first.
pub fn list(jobs: &Path) -> Result<Vec<JobDir>, FsError> {
    let entries = match fs::read_dir(jobs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context("listing the work area", jobs),
    };
    let mut dirs: Vec<JobDir> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| JobId::parse(&e.file_name().to_string_lossy()))
        .map(|id| JobDir::new(jobs, &id))
        .collect();
    dirs.sort_by(|a, b| a.root.cmp(&b.root));
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::verdict::{ErrorRecord, Reason};
    use crate::job::{Input, Stage};

    /// A journal written by remixd 0.1 (format 1). It must keep loading as the format
    /// evolves: a job whose answer was journaled by an old version is never submitted again.
    const V1_RESPONDED: &str = include_str!("../../tests/fixtures/journal-v1-responded.json");

    #[test]
    fn format_1_journal_keeps_loading() {
        let record: JobRecord = serde_json::from_str(V1_RESPONDED).expect("format 1 loads");
        assert_eq!(record.source.rel_path(), Path::new("a/b/cat.png"));
        assert_eq!(record.input, Input::Image);
        assert_eq!(record.attempts, 2);
        let Stage::Responded { answer } = &record.stage else {
            panic!("stage: {:?}", record.stage);
        };
        assert_eq!(answer.items.len(), 2);
        assert!(answer.items[1].url.is_none());
        assert!(record.timings.responded_at.is_some());
    }

    #[test]
    fn every_stage_round_trips_through_the_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = JobDir::new(dir.path(), &JobId::new());
        job.create().expect("create");
        let mut record: JobRecord = serde_json::from_str(V1_RESPONDED).expect("fixture");
        let error = ErrorRecord {
            job_id: record.job_id.to_string(),
            reason: Reason::BadResponse,
            message: "m".into(),
            stage: "submitting".into(),
            attempts: 1,
            http_status: Some(200),
            api_error: None,
            source: crate::job::describe::describe(&job.files(), &record.source).0,
            sidecar: None,
            at: "2026-11-24T00:00:00Z".into(),
            remixd_version: "0".into(),
        };
        let stages = [
            Stage::Claiming,
            Stage::Claimed,
            Stage::Submitting { attempt: 3 },
            record.stage.clone(),
            Stage::Publishing {
                dest: "/o/a".into(),
            },
            Stage::Quarantining {
                dest: "/q/a".into(),
                error: Box::new(error),
            },
        ];
        for stage in stages {
            record.stage = stage;
            job.write(&record).expect("write");
            assert_eq!(job.read().expect("read"), record);
        }
    }

    #[test]
    fn a_journal_from_a_newer_remixd_is_refused_not_misread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = JobDir::new(dir.path(), &JobId::new());
        job.create().expect("create");
        let mut record: JobRecord = serde_json::from_str(V1_RESPONDED).expect("fixture");
        record.format = JOURNAL_FORMAT + 1;
        job.write(&record).expect("write");
        assert!(matches!(job.read(), Err(JournalError::Corrupt { .. })));
    }
}
