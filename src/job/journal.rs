//! The journal: one `job.json` per job folder, a record appended durably at every stage
//! change (format 2; a format-1 file, one JSON document, still loads and takes appends).
//!
//! A job folder is `<work_dir>/owners/<owner>/jobs/<job_id>/` (see [`super::lease`]) holding
//! `job.json` and `files/` (the claimed input, its sidecar, downloaded outputs, then
//! `metadata.json` or `error.json`). The order of durable steps, what each must have synced
//! before the next may start, and why no other sync is needed:
//!
//! 1. Create the job folder, syncing the jobs folder (its name must survive before anything
//!    is moved into it), and `files/`; write `job.json` whole with stage `claiming`, naming
//!    the input and sidecar (a temporary file, synced, renamed, the job folder synced, which
//!    also makes `files/` durable): recovery can now finish or undo the claim.
//! 2. Rename the input, then the sidecar, from the inbox into `files/`; sync `files/` and the
//!    inbox folder. The rename of the input decides who owns it. Reference images are the
//!    one thing copied: streamed into `refs/` (each file synced, then the folder once), and
//!    recorded with the next record (`submitting`, or the verdict); no request is sent before
//!    it. `claimed` is not journaled: recovery of `claiming` with the inputs in `files/` does
//!    what it would, copying the references again.
//! 3. Before each request, append `submitting {attempt}` (`fdatasync`: an append needs no
//!    new name, so no folder sync); a crash here means the request may or may not have
//!    reached the API, and recovery sends it again (logged as `job.resubmitted`): there is
//!    no answer to reuse.
//! 4. Append `responded {answer}` (`fdatasync`) before downloading anything: from here the
//!    job is never submitted again; recovery downloads the recorded URLs.
//! 5. Each output goes to a `.part` file, synced, checked, and renamed to its final name.
//!    `files/` is not synced here (step 6 does it): an output whose name did not survive a
//!    crash is fetched again; a `.part` left by a crash is discarded and fetched again.
//! 6. Write `metadata.json` (or `error.json`) into `files/` whole (synced, renamed, `files/`
//!    synced, which also covers step 5's renames), append `publishing {dest}` (or
//!    `quarantining {dest, error}`), then move `files/` to `dest` in one rename and sync
//!    `dest`'s parent. The job folder is not synced: recovery that finds both `dest` (naming
//!    this job in its `metadata.json`/`error.json`) and `files/` only removes `files/`.
//!    Across filesystems the move is a copy into a hidden `.remixd-incoming-*` folder beside
//!    `dest` (each file and the folder synced), one rename to `dest`, then the source removed.
//!    Before step 6 remixd's own dot-named temporaries are removed from `files/`, so none
//!    reaches the outbox.
//! 7. Remove `job.json` and the job folder, not synced: a folder that comes back after a
//!    crash is a `publishing` job whose `files/` is gone, which recovery only removes.
//!
//! Folders many jobs change at once (the jobs folder, inbox and outbox folders) are synced
//! through [`crate::fsx::sync_dir_shared`], so jobs that change one together share a sync.
//! An append cut short by a crash or a full disk is skipped when the journal is read: the
//! stage before it stands, and nothing was done on the strength of it. A local failure at
//! any step (no space, read-only) leaves the journal as it was; the job waits and retries the
//! step, and no new input is claimed meanwhile.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{JOURNAL_FORMAT, JobId, JobRecord};
use crate::fsx::{self, Context, FsError};

/// The folder under the work area that holds job folders.
pub const JOBS_DIR: &str = "jobs";
const JOURNAL_FILE: &str = "job.json";
const FILES_DIR: &str = "files";
/// An owner's spare job folders, beside its `jobs/`.
pub const SPARE_DIR: &str = "spare";
/// How many spare job folders one process keeps.
const SPARES_KEPT: usize = 32;
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

    /// Creates the job folder and `files/`, taking a spare job folder of this process when
    /// there is one (see [`JobDir::remove`]). The jobs folder is synced (the job folder's own
    /// name must survive before anything is moved into it); the job folder itself is synced
    /// by the first journal write, or here when it was a spare, before any rename into
    /// `files/`.
    pub fn create(&self) -> Result<(), FsError> {
        let recycled = self.take_spare();
        if !recycled {
            fsx::create_dir_all_durable(&self.root)
                .context("creating the job folder", &self.root)?;
        }
        let files = self.files();
        match fs::create_dir(&files) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).context("creating the job folder", &files);
            }
            _ => {}
        }
        if recycled {
            if let Some(jobs) = self.root.parent() {
                fsx::sync_dir_shared(jobs).context("syncing the work area", jobs)?;
            }
            fsx::sync_dir(&self.root).context("syncing the job folder", &self.root)?;
        }
        Ok(())
    }

    /// Renames one of this process's spare job folders (an empty `job.json`, nothing else) to
    /// this job's name. `false` when there is none (or another job took it first).
    fn take_spare(&self) -> bool {
        let Some(spares) = self.spares() else {
            return false;
        };
        let Ok(entries) = fs::read_dir(&spares) else {
            return false;
        };
        for entry in entries.filter_map(Result::ok) {
            let spare = entry.path();
            if fs::rename(&spare, &self.root).is_err() {
                continue;
            }
            let empty = fs::metadata(self.journal_path()).is_ok_and(|m| m.len() == 0);
            if empty && fs::read_dir(&self.root).is_ok_and(|d| d.count() == 1) {
                return true;
            }
            // Not what a spare must be: it goes, and a new folder is made.
            let _ = fs::remove_dir_all(&self.root);
        }
        false
    }

    /// `<owner>/spare/`, beside this job folder's `jobs/`.
    fn spares(&self) -> Option<PathBuf> {
        Some(self.root.parent()?.parent()?.join(SPARE_DIR))
    }

    /// Records `record` durably: the first record is written whole (a temporary file, synced,
    /// renamed, the folder synced); each later one is appended and `fdatasync`ed, which needs
    /// no new file and no folder sync.
    pub fn write(&self, record: &JobRecord) -> Result<(), FsError> {
        let path = self.journal_path();
        // Not scrubbed: the journal keeps the answer exactly, so a resumed job can use it.
        let mut bytes = serde_json::to_vec(record)
            .map_err(std::io::Error::other)
            .context("writing the job journal", &path)?;
        match fs::OpenOptions::new().append(true).open(&path) {
            Ok(mut file) => {
                // The leading newline parts this record from one cut short by a crash or a
                // full disk, which the reader then skips.
                bytes.insert(0, b'\n');
                file.write_all(&bytes)
                    .and_then(|()| file.sync_data())
                    .context("appending to the job journal", &path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fsx::write_durable(&path, &bytes).context("writing the job journal", &path)
            }
            Err(e) => Err(e).context("appending to the job journal", &path),
        }
    }

    /// Reads the journal: its last whole record.
    pub fn read(&self) -> Result<JobRecord, JournalError> {
        let path = self.journal_path();
        let bytes = fs::read(&path).context("reading the job journal", &path)?;
        let record: JobRecord = last_record(&bytes).map_err(|problem| JournalError::Corrupt {
            path: path.display().to_string(),
            problem,
        })?;
        if record.format > JOURNAL_FORMAT {
            return Err(JournalError::Corrupt {
                path: path.display().to_string(),
                problem: format!("written by a newer remixd (format {})", record.format),
            });
        }
        Ok(record)
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
        // Not synced: a job folder that comes back after a crash holds a journal that says
        // `publishing` or `quarantining` with no `files/`, which recovery only removes.
        fs::remove_dir(&self.root).context("removing a finished job folder", &self.root)
    }

    /// Ends a finished job's folder (its `files/` already moved out): kept as a spare for the
    /// next claim, its `job.json` emptied, when this process holds fewer than
    /// [`SPARES_KEPT`]; else removed. On a filesystem without a journal (ext4 can run so)
    /// every removed file makes the next new ones slower to allocate, so the work area
    /// reuses its folders instead of making and removing two for every job. Not synced: a
    /// spare that comes back after a crash as a job folder with an empty journal is no job
    /// ([`JobDir::is_unclaimed`]).
    pub fn finish(&self) -> Result<(), FsError> {
        let Some(spares) = self.spares() else {
            return self.remove();
        };
        let kept = fs::read_dir(&spares).map_or(0, Iterator::count);
        let only_journal = !self.files().exists()
            && !self.refs().exists()
            && fs::read_dir(&self.root).is_ok_and(|d| d.count() == 1);
        if kept >= SPARES_KEPT || !only_journal {
            return self.remove();
        }
        let emptied = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.journal_path());
        if emptied.is_err() || fs::create_dir_all(&spares).is_err() {
            return self.remove();
        }
        let name = self
            .root
            .file_name()
            .map_or_else(|| "spare".into(), std::ffi::OsStr::to_os_string);
        match fs::rename(&self.root, spares.join(name)) {
            Ok(()) => Ok(()),
            Err(_) => self.remove(),
        }
    }

    /// Whether the folder holds no job: no whole journal record was ever written (a claim cut
    /// short before its first record, or a spare caught mid-rename) and nothing is in
    /// `files/`. Inputs are moved in only after the first record is durable, so such a folder
    /// can go.
    #[must_use]
    pub fn is_unclaimed(&self) -> bool {
        let no_record = fs::read(self.journal_path()).map_or(true, |bytes| {
            last_record::<serde_json::Value>(&bytes).is_err()
        });
        let files_empty = fs::read_dir(self.files()).map_or(true, |mut d| d.next().is_none());
        no_record && files_empty
    }
}

/// The last whole record of a journal. Format 1 is one JSON document (pretty-printed);
/// format 2 appends one line per stage change, each after a newline. A record cut short
/// (a crash or a full disk during an append) is skipped: the stage before it stands, and
/// nothing was done on the strength of a record that never became durable.
///
/// Generic so that readers of a part of the record (the gallery's "now" box) share the rule.
pub fn last_record<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut last = None;
    let mut problem = String::from("the file is empty");
    let mut at = 0;
    while at < bytes.len() {
        let mut stream = serde_json::Deserializer::from_slice(&bytes[at..]).into_iter();
        match stream.next() {
            Some(Ok(record)) => {
                last = Some(record);
                at += stream.byte_offset();
            }
            Some(Err(e)) => {
                problem = e.to_string();
                // Go on at the next record, which starts at a line's first character.
                match bytes[at + 1..].windows(2).position(|w| w == b"\n{") {
                    Some(next) => at += 1 + next + 1,
                    None => break,
                }
            }
            None => break,
        }
    }
    last.ok_or(problem)
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
            billable_attempts: 1,
            cost: None,
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

    /// The format-1 fixture read the way recovery reads it, and a format-1 journal that a
    /// newer remixd goes on appending to.
    #[test]
    fn a_format_1_file_reads_whole_and_takes_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = JobDir::new(dir.path(), &JobId::new());
        job.create().expect("create");
        fs::write(job.journal_path(), V1_RESPONDED).expect("fixture");
        let mut record = job.read().expect("format 1 through the reader");
        assert!(matches!(record.stage, Stage::Responded { .. }));
        record.stage = Stage::Publishing {
            dest: "/o/a".into(),
        };
        job.write(&record).expect("append");
        assert_eq!(job.read().expect("read"), record);
    }

    /// A record cut short (a crash mid-append, or a full disk) is skipped: the stage before
    /// it stands, and a whole record appended after it is still found.
    #[test]
    fn a_record_cut_short_is_skipped_wherever_it_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = JobDir::new(dir.path(), &JobId::new());
        job.create().expect("create");
        let mut record: JobRecord = serde_json::from_str(V1_RESPONDED).expect("fixture");
        record.stage = Stage::Submitting { attempt: 1 };
        job.write(&record).expect("first");
        let responded: JobRecord = serde_json::from_str(V1_RESPONDED).expect("fixture");
        let whole = serde_json::to_vec(&responded).expect("json");
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(job.journal_path())
            .expect("open");
        file.write_all(b"\n").expect("newline");
        file.write_all(&whole[..whole.len() / 2]).expect("torn");
        assert_eq!(
            job.read().expect("read").stage,
            Stage::Submitting { attempt: 1 },
            "a torn last record leaves the stage before it"
        );
        job.write(&responded).expect("appended after the torn one");
        assert_eq!(job.read().expect("read"), responded);
    }

    /// A finished job's folder is kept as a spare and taken by the next claim, with an empty
    /// journal: no file is removed or made for the job folder itself. A spare that comes back
    /// as a job folder (a crash mid-rename) is no job.
    #[test]
    fn finished_job_folders_are_reused_and_an_empty_one_is_no_job() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs = dir.path().join("owners/me").join(JOBS_DIR);
        let first = JobDir::new(&jobs, &JobId::new());
        first.create().expect("create");
        let record: JobRecord = serde_json::from_str(V1_RESPONDED).expect("fixture");
        first.write(&record).expect("write");
        let journal_ino = {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(first.journal_path()).expect("journal").ino()
        };
        fs::remove_dir(first.files()).expect("files moved out");
        first.finish().expect("finish");
        assert!(!first.exists());
        let second = JobDir::new(&jobs, &JobId::new());
        second.create().expect("create from the spare");
        {
            use std::os::unix::fs::MetadataExt;
            let meta = fs::metadata(second.journal_path()).expect("journal");
            assert_eq!(
                (meta.ino(), meta.len()),
                (journal_ino, 0),
                "the spare's journal, empty"
            );
        }
        assert!(second.files().is_dir());
        assert!(
            second.is_unclaimed(),
            "an empty journal and files/ is no job"
        );
        second.write(&record).expect("first record of the new job");
        assert_eq!(second.read().expect("read"), record);
        assert!(!second.is_unclaimed());
    }

    #[test]
    fn a_journal_with_no_whole_record_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = JobDir::new(dir.path(), &JobId::new());
        job.create().expect("create");
        fs::write(job.journal_path(), &V1_RESPONDED.as_bytes()[..100]).expect("torn");
        assert!(matches!(job.read(), Err(JournalError::Corrupt { .. })));
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
