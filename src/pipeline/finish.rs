//! The end of every job, published or quarantined: where its folder goes (`output.layout`
//! under the outbox or the quarantine, a free name), removing remixd's own temporaries, and
//! the one move that makes the folder appear complete, then the job folder's removal. What the
//! folder says (`metadata.json`, `error.json`) is [`super::publish`]'s and
//! [`super::quarantine`]'s.

use std::path::{Component, Path, PathBuf};

use crate::fsx::{self, Context, FsError};
use crate::job::journal::JobDir;
use crate::job::{JobId, JobRecord, SourceRef};

/// Where under `root` (the outbox or the quarantine) the job's folder goes, per `layout`.
#[must_use]
pub fn destination(root: &Path, layout: &str, rec: &JobRecord) -> PathBuf {
    let rel = render_layout(layout, &rec.source, &rec.job_id, &crate::clock::utc_date());
    free_destination(root, &rel)
}

/// Renders `layout` for a job: `{subdir}`, `{stem}`, `{job_id}`, `{date}` (UTC `YYYY-MM-DD`),
/// `{ext}`. Empty segments are dropped (so `{subdir}` at the inbox root leaves none) and any
/// segment that could climb out (`.`, `..`) is replaced, so the result always stays below the
/// root it is joined to.
#[must_use]
pub fn render_layout(layout: &str, source: &SourceRef, job_id: &JobId, date: &str) -> PathBuf {
    let text = layout
        .replace("{subdir}", &source.subdir)
        .replace("{stem}", source.stem())
        .replace("{job_id}", job_id.as_str())
        .replace("{date}", date)
        .replace("{ext}", &source.ext());
    let mut out = PathBuf::new();
    for segment in text.split('/') {
        match segment {
            "" => {}
            "." | ".." => out.push("_"),
            // File names are at most 255 bytes, and a `-N` suffix may still be added.
            s => out.push(crate::text::cut_bytes(&s.replace('\0', "_"), 240)),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(job_id.as_str());
    }
    debug_assert!(out.components().all(|c| matches!(c, Component::Normal(_))));
    out
}

/// A free destination under `root` for `rel`: `rel` itself, else `rel-2`, `rel-3`, ...
#[must_use]
pub fn free_destination(root: &Path, rel: &Path) -> PathBuf {
    let first = root.join(rel);
    if std::fs::symlink_metadata(&first).is_err() {
        return first;
    }
    let name = rel.file_name().unwrap_or_default();
    (2u32..=u32::MAX)
        .map(|n| {
            let mut suffixed = name.to_os_string();
            suffixed.push(format!("-{n}"));
            first.with_file_name(suffixed)
        })
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or(first)
}

/// Whether `dest` is a complete job folder of `job_id`: its `marker` file (`metadata.json`
/// or `error.json`) names the job.
#[must_use]
pub fn holds_job(dest: &Path, job_id: &JobId, marker: &str) -> bool {
    std::fs::read(dest.join(marker))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["job_id"] == job_id.as_str())
}

/// Removes remixd's own temporary files (dot-names: `.tmp-*.part`, `.STEM-remix-N.part`) that a
/// crash left in a job's files folder, so they never reach the outbox or quarantine. Inputs
/// never have dot-names: the inbox ignores them.
pub fn remove_temporaries(files: &Path) -> Result<(), FsError> {
    let entries = std::fs::read_dir(files).context("listing a job's files", files)?;
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with('.') {
            let path = entry.path();
            std::fs::remove_file(&path).context("removing a temporary file", &path)?;
        }
    }
    Ok(())
}

/// Moves a job's files folder to `dest` (creating its parents): one rename on the same
/// filesystem, else a synced copy and rename; either way `dest` appears complete.
pub fn move_out(files: &Path, dest: &Path) -> Result<(), FsError> {
    if let Some(parent) = dest.parent() {
        fsx::create_dir_all_durable(parent).context("creating the destination folder", parent)?;
    }
    fsx::move_dir_durable(files, dest).context("moving the job folder into place", dest)
}

/// Moves the job's files to `dest` and removes the job folder; also the recovery of a
/// `publishing` or `quarantining` job. `marker` is the file naming the job in `dest`.
pub fn finish_move(
    dir: &JobDir,
    rec: &JobRecord,
    dest: &Path,
    marker: &str,
) -> Result<(), FsError> {
    let files = dir.files();
    if files.exists() {
        if holds_job(dest, &rec.job_id, marker) {
            // A copy across filesystems was renamed into place, then the process stopped
            // before removing the source: the destination is complete, the source redundant.
            std::fs::remove_dir_all(&files).context(
                "removing a job's files already copied to their destination",
                &files,
            )?;
        } else {
            move_out(&files, dest)?;
        }
    }
    dir.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(subdir: &str, file: &str) -> SourceRef {
        SourceRef {
            subdir: subdir.into(),
            file: file.into(),
            sidecar: None,
            mask: None,
            raw: None,
        }
    }

    #[test]
    fn layout_at_inbox_root_has_no_empty_segment() {
        let id = JobId::new();
        let rel = render_layout("{subdir}/{stem}-{job_id}", &source("", "cat.png"), &id, "d");
        assert_eq!(rel, PathBuf::from(format!("cat-{id}")));
    }

    #[test]
    fn layout_keeps_subfolders_and_placeholders() {
        let id = JobId::new();
        let rel = render_layout(
            "{date}/{subdir}/{stem}.{ext}-{job_id}",
            &source("a/b", "Cat.JPG"),
            &id,
            "2026-01-02",
        );
        assert_eq!(rel, PathBuf::from(format!("2026-01-02/a/b/Cat.jpg-{id}")));
    }

    #[test]
    fn layout_cannot_climb_out() {
        let id = JobId::new();
        let rel = render_layout("{subdir}/../{stem}", &source("..", ".."), &id, "d");
        assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
    }
}

#[cfg(test)]
mod recovery_tests {
    use super::*;

    #[test]
    fn temporaries_are_removed_and_inputs_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["cat.png", "cat.yaml", ".tmp-x.part", ".cat-remix-1.part"] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        remove_temporaries(dir.path()).expect("clean");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["cat.png", "cat.yaml"]);
    }

    #[test]
    fn holds_job_checks_the_job_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = JobId::new();
        assert!(!holds_job(dir.path(), &id, "metadata.json"));
        let json = serde_json::json!({ "job_id": id.as_str() }).to_string();
        std::fs::write(dir.path().join("metadata.json"), json).expect("write");
        assert!(holds_job(dir.path(), &id, "metadata.json"));
        assert!(!holds_job(dir.path(), &id, "error.json"));
        assert!(!holds_job(dir.path(), &JobId::new(), "metadata.json"));
    }
}
