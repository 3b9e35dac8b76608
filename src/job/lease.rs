//! Owning a part of the work area. Each process registers `<work_dir>/owners/<owner>/` with a
//! `lease` file it rewrites every third of `lease`; its jobs live in that folder's `jobs/`.
//! A process whose lease has not been renewed for `lease` is presumed dead, and any other
//! process takes its jobs over by renaming each job folder into its own `jobs/`: the rename
//! decides who gets a job, so no job is run by two live processes. A process that finds a job
//! folder gone has been presumed dead itself and drops the job ([`crate::pipeline`]).
//!
//! Lease ages are measured against the filesystem's own clock (the mtime of the taker's freshly
//! renewed lease), so hosts sharing the folder over NFS or SMB need not agree on the time. On
//! one host a lease whose process is gone is taken at once, so a restart resumes immediately.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::JobId;
use super::journal::{self, JOBS_DIR, JobDir};
use crate::events;
use crate::fsx::{self, Context, FsError};

pub use crate::config::OWNERS_DIR;
const LEASE_FILE: &str = "lease";
/// The owner's advisory state for `remixd status` ([`crate::status::state_file`]); it goes
/// with the owner's folder.
pub const STATE_FILE: &str = "state.json";

/// What a lease file says about its process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// The remixd version.
    pub version: String,
}

/// This process's part of the work area.
#[derive(Debug, Clone)]
pub struct Owner {
    work_dir: PathBuf,
    root: PathBuf,
    info: LeaseInfo,
}

impl Owner {
    /// Registers a new owner (a fresh id) and writes its first lease.
    pub fn register(work_dir: &Path) -> Result<Self, FsError> {
        let id = ulid::Ulid::new().to_string();
        let root = work_dir.join(OWNERS_DIR).join(id);
        let owner = Self {
            work_dir: work_dir.to_path_buf(),
            info: LeaseInfo {
                host: host_name(),
                pid: std::process::id(),
                version: crate::VERSION.to_owned(),
            },
            root,
        };
        fsx::create_dir_all_durable(&owner.jobs())
            .context("registering in the work area", &owner.root)?;
        owner.renew()?;
        Ok(owner)
    }

    /// This owner's id (its folder's name under `owners/`), logged at start.
    #[must_use]
    pub fn id(&self) -> String {
        owner_id(&self.root)
    }

    /// What this owner's lease says about it.
    #[must_use]
    pub fn info(&self) -> &LeaseInfo {
        &self.info
    }

    /// This owner's folder.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This owner's jobs folder.
    #[must_use]
    pub fn jobs(&self) -> PathBuf {
        self.root.join(JOBS_DIR)
    }

    /// Rewrites the lease; returns its new mtime, the filesystem's idea of "now". If this
    /// owner's folder is gone (another process presumed it dead and took its jobs), it is made
    /// again, empty: the jobs taken stay with their taker, new claims land here.
    pub fn renew(&self) -> Result<SystemTime, FsError> {
        fsx::create_dir_all_durable(&self.jobs())
            .context("registering in the work area", &self.root)?;
        let path = self.root.join(LEASE_FILE);
        let bytes = serde_json::to_vec(&self.info).map_err(std::io::Error::other);
        bytes
            .and_then(|b| fsx::write_durable(&path, &b))
            .and_then(|()| fs::metadata(&path)?.modified())
            .context("renewing the lease", &path)
    }

    /// Takes over the jobs of every owner presumed dead (and of the single-process layout's
    /// `<work_dir>/jobs/`), returning the job folders now ours.
    pub fn take_over_dead(&self, lease: Duration, now: SystemTime) -> Vec<JobDir> {
        let mut taken = self.adopt(&self.work_dir.join(JOBS_DIR));
        let Ok(entries) = fs::read_dir(self.work_dir.join(OWNERS_DIR)) else {
            return taken;
        };
        for entry in entries.filter_map(Result::ok) {
            let peer = entry.path();
            if peer == self.root || !self.presumed_dead(&peer, lease, now) {
                continue;
            }
            let jobs = self.adopt(&peer.join(JOBS_DIR));
            if !jobs.is_empty() {
                tracing::warn!(event = events::JOB_TAKEN_OVER, owner = %peer.display(), jobs = jobs.len(),
                    "taking over the jobs of a remixd process presumed dead (its lease expired)");
            }
            taken.extend(jobs);
            remove_if_empty(&peer);
        }
        taken
    }

    /// How many owners hold a fresh lease now, this one included: the processes sharing the
    /// account's limits.
    #[must_use]
    pub fn live_owners(&self, lease: Duration, now: SystemTime) -> usize {
        let Ok(entries) = fs::read_dir(self.work_dir.join(OWNERS_DIR)) else {
            return 1;
        };
        let peers = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|peer| *peer != self.root)
            .filter(|peer| peer.join(LEASE_FILE).exists())
            .filter(|peer| !self.presumed_dead(peer, lease, now))
            .count();
        1 + peers
    }

    fn presumed_dead(&self, peer: &Path, lease: Duration, now: SystemTime) -> bool {
        Peer::read(peer).presumed_dead(&self.info.host, lease, now)
    }

    /// Moves every job folder in `jobs` into ours; the ones another process moved first are
    /// simply not there any more.
    fn adopt(&self, jobs: &Path) -> Vec<JobDir> {
        let Ok(list) = journal::list(jobs) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        for dir in list {
            let Some(name) = dir.path().file_name() else {
                continue;
            };
            let dest = self.jobs().join(name);
            // The rename alone decides who owns the job. The syncs after it may fail when
            // another taker has just removed the emptied peer folder; the job is ours anyway.
            let Some(id) = JobId::parse(&name.to_string_lossy()) else {
                continue;
            };
            if fs::rename(dir.path(), &dest).is_ok() {
                let _ = fsx::sync_dir(&self.jobs());
                let _ = fsx::sync_dir(jobs);
                taken.push(JobDir::new(&self.jobs(), &id));
            }
        }
        taken
    }

    /// Removes this owner's folder when it holds no job (a clean stop with nothing pending).
    pub fn retire(&self) {
        remove_if_empty(&self.root);
    }
}

/// One owner folder as anyone can read it: its lease and when it was last renewed.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The owner's folder.
    pub root: PathBuf,
    /// What its lease says, when it can be read.
    pub info: Option<LeaseInfo>,
    /// The lease's mtime (the folder's when there is no lease).
    pub renewed: Option<SystemTime>,
}

impl Peer {
    /// Reads the owner folder `root`.
    #[must_use]
    pub fn read(root: &Path) -> Self {
        let path = root.join(LEASE_FILE);
        let info = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let renewed = fs::metadata(&path)
            .and_then(|m| m.modified())
            .or_else(|_| fs::metadata(root).and_then(|m| m.modified()))
            .ok();
        Self {
            root: root.to_path_buf(),
            info,
            renewed,
        }
    }

    /// Every owner folder under `work_dir`.
    #[must_use]
    pub fn all(work_dir: &Path) -> Vec<Self> {
        let Ok(entries) = fs::read_dir(work_dir.join(OWNERS_DIR)) else {
            return Vec::new();
        };
        let mut peers: Vec<Self> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| Self::read(&e.path()))
            .collect();
        peers.sort_by(|a, b| a.root.cmp(&b.root));
        peers
    }

    /// The owner's id (its folder's name).
    #[must_use]
    pub fn id(&self) -> String {
        owner_id(&self.root)
    }

    /// The lease rule, seen from `host` at `now`: dead when its process is gone from this
    /// very host, or when its lease is older than `lease`.
    #[must_use]
    pub fn presumed_dead(&self, host: &str, lease: Duration, now: SystemTime) -> bool {
        if let Some(info) = &self.info {
            if info.host == host && !process_alive(info.pid) {
                return true;
            }
        }
        self.renewed
            .is_some_and(|at| now.duration_since(at).is_ok_and(|age| age > lease))
    }
}

/// Removes an owner folder that holds no job: its lease and empty `jobs/`. Its usage file
/// keeps counting for its day, so a folder whose usage is of today keeps that file (and
/// loses only its lease: it is no process any more).
fn remove_if_empty(owner: &Path) {
    let jobs = owner.join(JOBS_DIR);
    if fs::remove_dir(&jobs).is_ok() || !jobs.exists() {
        // Spare job folders serve only their own process.
        let _ = fs::remove_dir_all(owner.join(journal::SPARE_DIR));
        let _ = fs::remove_file(owner.join(STATE_FILE));
        let _ = fs::remove_file(owner.join(LEASE_FILE));
        if crate::api::usage::counts_today(owner) {
            return;
        }
        let _ = fs::remove_file(owner.join(crate::api::usage::USAGE_FILE));
        // Temporaries of writes cut short (the lease, the day's count) go with it.
        if let Ok(entries) = fs::read_dir(owner) {
            for entry in entries.filter_map(Result::ok) {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let _ = fs::remove_dir(owner);
    }
}

/// An owner's id: its folder's name under `owners/`.
fn owner_id(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// This host's name, as leases record it.
#[must_use]
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    // EPERM means it exists but belongs to someone else: alive.
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_in(jobs: &Path) -> JobId {
        let id = JobId::new();
        fs::create_dir_all(jobs.join(id.as_str()).join("files")).expect("job folder");
        id
    }

    #[test]
    fn a_live_peer_keeps_its_jobs_and_a_stale_one_loses_them() {
        let work = tempfile::tempdir().expect("tempdir");
        let me = Owner::register(work.path()).expect("me");
        let peer = Owner::register(work.path()).expect("peer");
        let id = job_in(&peer.jobs());
        let now = me.renew().expect("renew");
        assert!(
            me.take_over_dead(Duration::from_secs(60), now).is_empty(),
            "same pid: alive"
        );
        let later = now + Duration::from_secs(61);
        let taken = me.take_over_dead(Duration::from_secs(60), later);
        assert_eq!(taken.len(), 1);
        assert!(me.jobs().join(id.as_str()).is_dir());
        assert!(
            !peer.root.exists(),
            "the dead owner's empty folder is removed"
        );
    }

    #[test]
    fn a_dead_process_on_this_host_is_taken_over_at_once() {
        let work = tempfile::tempdir().expect("tempdir");
        let me = Owner::register(work.path()).expect("me");
        let dead = work.path().join(OWNERS_DIR).join("01DEAD");
        let id = job_in(&dead.join(JOBS_DIR));
        let info = LeaseInfo {
            host: host_name(),
            pid: i32::MAX as u32,
            version: "0".into(),
        };
        fs::write(
            dead.join(LEASE_FILE),
            serde_json::to_vec(&info).expect("json"),
        )
        .expect("lease");
        let now = me.renew().expect("renew");
        assert_eq!(me.take_over_dead(Duration::from_secs(3600), now).len(), 1);
        assert!(me.jobs().join(id.as_str()).is_dir());
    }

    #[test]
    fn the_single_process_layout_is_adopted() {
        let work = tempfile::tempdir().expect("tempdir");
        let id = job_in(&work.path().join(JOBS_DIR));
        let me = Owner::register(work.path()).expect("me");
        let now = me.renew().expect("renew");
        assert_eq!(me.take_over_dead(Duration::from_secs(60), now).len(), 1);
        assert!(me.jobs().join(id.as_str()).is_dir());
    }
}
