//! Claiming: moving an input (and its sidecar) from the inbox into a job folder by atomic
//! rename. The rename of the input decides ownership: if it is gone, someone else took it.
//! Finishing a claim interrupted by a crash is here too.

use std::path::Path;
use std::time::SystemTime;

use crate::fsx::{self, Context, FsError};
use crate::job::journal::JobDir;
use crate::job::{Input, JOURNAL_FORMAT, JobId, JobRecord, SourceRef, Stage, Timings};

/// What became of a claim.
#[derive(Debug)]
pub enum Claim {
    /// The input is in the job folder (the journal still says `claiming`).
    Taken(JobDir, Box<JobRecord>),
    /// The input was gone (another process took it, or its owner removed it).
    Lost,
}

/// Everything needed to claim one input.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Id given at detection.
    pub job_id: JobId,
    /// When it was first seen.
    pub detected_at: SystemTime,
    /// Where it is.
    pub source: SourceRef,
    /// What it is.
    pub input: Input,
}

/// Claims an input into `<jobs>/<job_id>/files/`, `jobs` being this process's jobs folder.
pub fn claim(inbox: &Path, jobs: &Path, req: ClaimRequest) -> Result<Claim, FsError> {
    let dir = JobDir::new(jobs, &req.job_id);
    dir.create()?;
    let mut record = JobRecord {
        format: JOURNAL_FORMAT,
        job_id: req.job_id,
        source: req.source,
        input: req.input,
        attempts: 0,
        billable_attempts: 0,
        request: None,
        timings: Timings {
            detected_at: Some(req.detected_at),
            ..Timings::default()
        },
        stage: Stage::Claiming,
    };
    dir.write(&record)?;
    finish(inbox, &dir, &mut record)
}

/// Moves whatever of the claim is still in the inbox into the job folder; also the recovery
/// of a `claiming` job.
pub fn finish(inbox: &Path, dir: &JobDir, record: &mut JobRecord) -> Result<Claim, FsError> {
    let files = dir.files();
    let from_dir = inbox.join(record.source.subdir_path());
    if !take(&from_dir, &files, &record.source.file_os())? {
        dir.remove()?;
        return Ok(Claim::Lost);
    }
    if let Some(sidecar) = record.source.sidecar_os() {
        if !take(&from_dir, &files, &sidecar)? {
            record.source.drop_sidecar();
        }
    }
    fsx::sync_dir(&files).context("syncing the job folder", &files)?;
    fsx::sync_dir_shared(&from_dir).context("syncing the inbox folder", &from_dir)?;
    record.timings.claimed_at = Some(SystemTime::now());
    // Not journaled: recovery of a `claiming` job whose inputs are all in `files/` does
    // exactly what `claimed` would, so the next record written is `submitting` (or the
    // verdict of the checks).
    record.stage = Stage::Claimed;
    Ok(Claim::Taken(dir.clone(), Box::new(record.clone())))
}

/// Renames `name` from `from_dir` into `files`; true when it is (now) in `files`.
fn take(from_dir: &Path, files: &Path, name: &std::ffi::OsStr) -> Result<bool, FsError> {
    let dest = files.join(name);
    if std::fs::symlink_metadata(&dest).is_ok() {
        return Ok(true);
    }
    let src = from_dir.join(name);
    match std::fs::rename(&src, &dest) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).context("claiming into the work area", &src),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn a_name_that_is_not_utf8_is_claimed_by_its_bytes_and_shown_escaped() {
        let root = tempfile::tempdir().expect("tempdir");
        let inbox = root.path().join("inbox");
        let name = OsStr::from_bytes(b"\xFF\xFEcat.png");
        std::fs::create_dir_all(inbox.join("a")).expect("inbox");
        std::fs::write(inbox.join("a").join(name), b"bytes").expect("input");
        let source = SourceRef::new(Path::new("a"), name, None);
        assert_eq!(source.file, "\\xFF\\xFEcat.png");
        let req = ClaimRequest {
            job_id: JobId::new(),
            detected_at: SystemTime::now(),
            source,
            input: Input::Image,
        };
        let Claim::Taken(dir, record) =
            claim(&inbox, &root.path().join("jobs"), req).expect("claim")
        else {
            panic!("lost");
        };
        assert_eq!(
            std::fs::read(dir.files().join(name)).expect("claimed"),
            b"bytes"
        );
        assert!(!inbox.join("a").join(name).exists());
        let reread = dir.read().expect("journal");
        assert_eq!(
            reread.source, record.source,
            "raw names survive the journal"
        );
    }

    #[test]
    fn a_vanished_input_is_lost_not_an_error() {
        let root = tempfile::tempdir().expect("tempdir");
        let req = ClaimRequest {
            job_id: JobId::new(),
            detected_at: SystemTime::now(),
            source: SourceRef::new(Path::new(""), OsStr::new("gone.png"), None),
            input: Input::Image,
        };
        let jobs = root.path().join("jobs");
        assert!(matches!(claim(root.path(), &jobs, req), Ok(Claim::Lost)));
        assert_eq!(
            std::fs::read_dir(&jobs).expect("jobs").count(),
            0,
            "no empty job left"
        );
    }
}
