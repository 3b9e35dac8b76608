//! Claiming: moving an input (and its sidecar and mask) from the inbox into a job folder by
//! atomic rename, and copying the reference images it names into the job ([`super::references`]).
//! The rename of the input decides ownership: if it is gone, someone else took it. Finishing a
//! claim interrupted by a crash is here too, and taking a mask that came after the claim.

use std::path::Path;
use std::time::SystemTime;

use super::references;
use crate::config::Config;
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
pub fn claim(config: &Config, jobs: &Path, req: ClaimRequest) -> Result<Claim, FsError> {
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
        references: Vec::new(),
        reference_error: None,
        timings: Timings {
            detected_at: Some(req.detected_at),
            ..Timings::default()
        },
        stage: Stage::Claiming,
    };
    dir.write(&record)?;
    finish(config, &dir, &mut record)
}

/// Moves whatever of the claim is still in the inbox into the job folder and copies the
/// references it names; also the recovery of a `claiming` job.
pub fn finish(config: &Config, dir: &JobDir, record: &mut JobRecord) -> Result<Claim, FsError> {
    let inbox = &config.inbox;
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
    if let Some(mask) = record.source.mask_os() {
        if !take(&from_dir, &files, &mask)? {
            record.source.drop_mask();
        }
    }
    fsx::sync_dir(&files).context("syncing the job folder", &files)?;
    fsx::sync_dir_shared(&from_dir).context("syncing the inbox folder", &from_dir)?;
    copy_references(config, dir, record)?;
    record.timings.claimed_at = Some(SystemTime::now());
    // Not journaled: recovery of a `claiming` job whose inputs are all in `files/` does
    // exactly what `claimed` would, so the next record written is `submitting` (or the
    // verdict of the checks).
    record.stage = Stage::Claimed;
    Ok(Claim::Taken(dir.clone(), Box::new(record.clone())))
}

/// Copies the references the job's fields name into `refs/`. Fields that cannot be read are
/// left for the prepare stage to refuse; a reference that cannot be used is recorded for it.
fn copy_references(config: &Config, dir: &JobDir, record: &mut JobRecord) -> Result<(), FsError> {
    record.references.clear();
    record.reference_error = None;
    if !matches!(record.input, crate::job::Input::Image) {
        return Ok(());
    }
    let Ok(fields) = super::prepare::layers(config, &dir.files(), &record.source) else {
        return Ok(());
    };
    match references::copy_all(&config.inbox, &dir.refs(), &fields.references())? {
        Ok(copies) => record.references = copies,
        Err(problem) => record.reference_error = Some(problem),
    }
    Ok(())
}

/// Takes the inpaint mask that came after the claim, once it is in the image's inbox folder
/// (or already in `files/` from a run cut short): one of `STEM.mask.{png,jpg,jpeg,webp}`.
/// True when the job now has it (journaled).
pub(super) fn take_late_mask(
    config: &Config,
    dir: &JobDir,
    record: &mut JobRecord,
) -> Result<bool, FsError> {
    let from_dir = config.inbox.join(record.source.subdir_path());
    let files = dir.files();
    for name in crate::sidecar::mask_candidates(&record.source.file_os()) {
        if take(&from_dir, &files, &name)? {
            fsx::sync_dir(&files).context("syncing the job folder", &files)?;
            fsx::sync_dir_shared(&from_dir).context("syncing the inbox folder", &from_dir)?;
            record.source = record.source.clone().with_mask(Some(&name));
            dir.write(record)?;
            return Ok(true);
        }
    }
    Ok(false)
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

    /// A dry-run config whose inbox is `root/inbox`.
    fn config_for(root: &Path) -> Config {
        let path = root.join("config.yaml");
        std::fs::write(
            &path,
            "inbox: inbox\noutbox: outbox\nquarantine: quarantine\napi:\n  provider: dry-run\n",
        )
        .expect("config");
        crate::config::load(&path, crate::config::Overrides::default()).expect("config loads")
    }

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
            claim(&config_for(root.path()), &root.path().join("jobs"), req).expect("claim")
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
        let config = config_for(root.path());
        assert!(matches!(claim(&config, &jobs, req), Ok(Claim::Lost)));
        assert_eq!(
            std::fs::read_dir(&jobs).expect("jobs").count(),
            0,
            "no empty job left"
        );
    }
}
