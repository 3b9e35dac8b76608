//! The inbox side of remixd: what an inbox entry is by its name (image, sidecar, defaults,
//! ignored, stray), and the rooms that turn entries into claim requests:
//! [`watch`] notices changes (native events, folder polls, reconcile scans), [`settle`] keeps
//! the deadlines (settle, the wait for a late sidecar, orphan sidecars), and [`intake_loop`]
//! sleeps until one of them is due and hands ready inputs to jobs.

pub mod intake_loop;
pub mod settle;
pub mod watch;

pub use settle::{Decision, Detected, Intake, IntakeTimings};

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::sidecar::SidecarKind;

pub use crate::fsx::{EntryType, Snapshot};
pub use crate::sidecar::DEFAULTS_FILE;

/// Names remixd itself writes into outbox and quarantine folders.
const RESERVED_NAMES: [&str; 2] = ["metadata.json", "error.json"];
use crate::image_info::IMAGE_EXTS;
const IGNORED_SUFFIXES: [&str; 5] = [".tmp", ".part", ".partial", ".crdownload", ".swp"];
/// What file browsers leave in every folder they show (Windows, then macOS's custom icon
/// file; `.DS_Store` and `._*` are dot-files already).
const FILE_BROWSER_DEBRIS: [&[u8]; 4] = [b"Thumbs.db", b"ehthumbs.db", b"desktop.ini", b"Icon\r"];

/// What a name says an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// Hidden, temporary or partial: never touched.
    Ignored,
    /// `_defaults.yaml`: read, never moved.
    Defaults,
    /// `*.png *.jpg *.jpeg *.webp` (any case).
    Image,
    /// `*.yaml *.yml *.json *.txt`.
    Sidecar(SidecarKind),
    /// `STEM.mask.{png,jpg,jpeg,webp}` (any case): the inpaint mask of `STEM.*`, never a job.
    Mask,
    /// Anything else.
    Other,
}

/// Whether a single path component is ignored (`.x`, `~x`, `x.tmp`, ...).
#[must_use]
pub fn is_ignored_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    if bytes.starts_with(b".") || bytes.starts_with(b"~") {
        return true;
    }
    if FILE_BROWSER_DEBRIS
        .iter()
        .any(|d| bytes.eq_ignore_ascii_case(d))
    {
        return true;
    }
    IGNORED_SUFFIXES.iter().any(|s| {
        bytes.len() >= s.len() && bytes[bytes.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
    })
}

/// Whether a folder name marks an asset folder (`_refs/`): shared files that are never jobs.
#[must_use]
pub fn is_asset_folder(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b"_")
}

/// Classifies a file name.
#[must_use]
pub fn classify_name(name: &OsStr) -> NameKind {
    if is_ignored_name(name) {
        return NameKind::Ignored;
    }
    let text = name.to_string_lossy();
    if text == DEFAULTS_FILE {
        return NameKind::Defaults;
    }
    // remixd writes these names into every job folder; taking a file so named along would
    // overwrite it there, so it is left where it is (typically a job folder copied back).
    if RESERVED_NAMES.contains(&text.as_ref()) {
        return NameKind::Ignored;
    }
    let Some((_, ext)) = text.rsplit_once('.') else {
        return NameKind::Other;
    };
    let ext = ext.to_ascii_lowercase();
    if IMAGE_EXTS.contains(&ext.as_str()) {
        if is_mask_name(name.as_bytes()) {
            NameKind::Mask
        } else {
            NameKind::Image
        }
    } else if let Some(kind) = SidecarKind::from_ext(&ext) {
        NameKind::Sidecar(kind)
    } else {
        NameKind::Other
    }
}

/// The marker between an image's stem and its mask's extension.
const MASK_MARK: &[u8] = b".mask.";

/// Whether an image name is a mask's: `STEM.mask.EXT`, with a non-empty stem.
fn is_mask_name(name: &[u8]) -> bool {
    let Some(dot) = name.iter().rposition(|&b| b == b'.') else {
        return false;
    };
    let head = &name[..=dot];
    head.len() > MASK_MARK.len()
        && head[head.len() - MASK_MARK.len()..].eq_ignore_ascii_case(MASK_MARK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_names() {
        assert_eq!(classify_name(OsStr::new("cat.PNG")), NameKind::Image);
        assert_eq!(classify_name(OsStr::new("cat.jpeg")), NameKind::Image);
        assert_eq!(
            classify_name(OsStr::new("cat.yml")),
            NameKind::Sidecar(SidecarKind::Yaml)
        );
        assert_eq!(
            classify_name(OsStr::new("_defaults.yaml")),
            NameKind::Defaults
        );
        assert_eq!(classify_name(OsStr::new(".cat.png")), NameKind::Ignored);
        assert_eq!(classify_name(OsStr::new("~cat.png")), NameKind::Ignored);
        assert_eq!(classify_name(OsStr::new("cat.png.part")), NameKind::Ignored);
        assert_eq!(classify_name(OsStr::new("cat.PNG.TMP")), NameKind::Ignored);
        assert_eq!(
            classify_name(OsStr::new("cat.crdownload")),
            NameKind::Ignored
        );
        assert_eq!(classify_name(OsStr::new("notes.pdf")), NameKind::Other);
        assert_eq!(classify_name(OsStr::new("README")), NameKind::Other);
        assert_eq!(
            classify_name(OsStr::new("metadata.json")),
            NameKind::Ignored
        );
        assert_eq!(classify_name(OsStr::new("error.json")), NameKind::Ignored);
        assert_eq!(classify_name(OsStr::new("cat.mask.png")), NameKind::Mask);
        assert_eq!(classify_name(OsStr::new("cat.MASK.JPEG")), NameKind::Mask);
        assert_eq!(classify_name(OsStr::new(".mask.png")), NameKind::Ignored);
        assert_eq!(classify_name(OsStr::new("mask.png")), NameKind::Image);
        assert_eq!(
            classify_name(OsStr::new("cat.mask.yaml")),
            NameKind::Sidecar(SidecarKind::Yaml)
        );
    }

    #[test]
    fn a_mask_is_looked_for_by_the_image_stem() {
        let names = crate::sidecar::mask_candidates(OsStr::new("cat.photo.JPG"));
        assert_eq!(names[0], "cat.photo.mask.png");
        assert!(names.iter().any(|n| n == "cat.photo.mask.WEBP"));
        assert!(names.iter().any(|n| n == "cat.photo.MASK.jpeg"));
        assert!(names.iter().all(|n| classify_name(n) == NameKind::Mask));
    }

    /// README, "Dropping files": what Windows and macOS file browsers write into the folders
    /// they show is ignored like dot-files, never quarantined as `unsupported_format`.
    #[test]
    fn file_browser_debris_is_ignored() {
        for name in [
            "Thumbs.db",
            "thumbs.db",
            "ehthumbs.db",
            "desktop.ini",
            "Desktop.ini",
            "Icon\r",
            ".DS_Store",
            "._cat.png",
        ] {
            assert_eq!(
                classify_name(OsStr::new(name)),
                NameKind::Ignored,
                "{name:?}"
            );
        }
        assert_eq!(classify_name(OsStr::new("Icon")), NameKind::Other);
        assert_eq!(classify_name(OsStr::new("my-Thumbs.db")), NameKind::Other);
    }
}
