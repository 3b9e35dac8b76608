//! Creating the folders a config names and checking the work area's filesystem.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::{fs, io};

use super::raw::one_line;
use super::{Config, ConfigError};

impl Config {
    /// Creates the inbox, outbox, quarantine and work area when missing (with the umask
    /// applied), and checks that the work area is on the inbox's filesystem (by device id).
    ///
    /// # Errors
    /// A [`ConfigError::Key`] naming the folder key (`inbox`, `work_dir`, ...) and the problem.
    pub fn prepare_folders(&self) -> Result<(), ConfigError> {
        let mode = 0o777 & !self.umask;
        for (key, dir) in [
            ("inbox", &self.inbox),
            ("outbox", &self.outbox),
            ("quarantine", &self.quarantine),
        ] {
            create_folder(dir, mode).map_err(|text| self.key_error(key, &text))?;
        }
        // Checked before creating the work area so a misplaced one is not left behind.
        self.check_same_filesystem()?;
        create_folder(&self.work_dir, mode).map_err(|text| self.key_error("work_dir", &text))
    }

    fn check_same_filesystem(&self) -> Result<(), ConfigError> {
        let device = |dir: &Path| {
            dir.ancestors()
                .find_map(|p| fs::metadata(p).ok())
                .map(|meta| meta.dev())
        };
        let (inbox, work) = (device(&self.inbox), device(&self.work_dir));
        if inbox.is_some() && inbox == work {
            return Ok(());
        }
        Err(self.key_error(
            "work_dir",
            &format!(
                "{} is not on the inbox's filesystem ({}); claiming a job is a rename, which \
                 cannot cross filesystems: leave work_dir unset (<inbox>/.remixd) or pick a \
                 folder on the same filesystem",
                self.work_dir.display(),
                self.inbox.display()
            ),
        ))
    }

    fn key_error(&self, key: &str, problem: &str) -> ConfigError {
        ConfigError::Key {
            path: self.path.clone(),
            key: key.to_owned(),
            problem: one_line(problem),
        }
    }
}

/// Creates `dir` and its missing parents with `mode`, leaving existing folders alone.
pub(super) fn create_folder(dir: &Path, mode: u32) -> Result<(), String> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|p| matches!(p.try_exists(), Ok(false)))
        .collect();
    for new in missing.iter().rev() {
        match fs::create_dir(new) {
            Ok(()) => set_mode(new, mode)
                .map_err(|e| format!("cannot set the mode of {}: {e}", new.display()))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", new.display())),
        }
    }
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!("{} exists but is not a folder", dir.display())),
        Err(e) => Err(format!("cannot use {}: {e}", dir.display())),
    }
}

/// Sets the permission bits explicitly, because `mkdir` would also apply the process umask,
/// which may be stricter than the configured one.
pub(super) fn set_mode(dir: &Path, mode: u32) -> io::Result<()> {
    // A setgid bit inherited from a group-shared parent must survive, or new files would
    // stop taking the folder's group.
    let special = fs::metadata(dir)?.permissions().mode() & 0o7000;
    fs::set_permissions(dir, fs::Permissions::from_mode(special | mode))
}
