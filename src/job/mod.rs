//! A job: its id, where its input came from, and the stage it has reached. The stage is what
//! the journal records and what recovery matches on; see [`journal`] for the order of durable
//! steps. The parts: [`describe`] (what an input is, hashed), [`verdict`] (why a job ends in
//! the quarantine), [`journal`] (the durable record), [`lease`] (whose job it is).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::api::Answer;
use crate::sidecar::RemixRequest;
use crate::text::{cut_bytes, escape_name};

pub mod describe;
pub mod journal;
pub mod lease;
pub mod verdict;

use verdict::{ErrorRecord, Reason};

/// A job's id: a ULID, unique, sortable by time and safe in a file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// A new id for an input detected now.
    // No `Default`: a default that mints a fresh random id would hide where ids are made.
    #[allow(clippy::new_without_default)]
    #[must_use]
    pub fn new() -> Self {
        Self(ulid::Ulid::new().to_string())
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of a ULID minted when the input was detected.
    #[must_use]
    pub fn from_ulid(ulid: ulid::Ulid) -> Self {
        Self(ulid.to_string())
    }

    /// Reads an id back from a job folder's name, refusing anything that is not a ULID.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        ulid::Ulid::from_string(text)
            .ok()
            .map(|u| Self(u.to_string()))
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest stem used in names remixd makes, in bytes.
pub const MAX_STEM_BYTES: usize = 180;

/// Where a job's input came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    /// Folder inside the inbox, `/`-separated, `""` at the root (escaped if not UTF-8).
    pub subdir: String,
    /// The input's file name (escaped if not UTF-8).
    pub file: String,
    /// The sidecar's file name, if one was claimed with it.
    pub sidecar: Option<String>,
    /// The inpaint mask's file name (`STEM.mask.EXT`), if one was claimed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    /// The exact bytes of the names, kept only when one is not UTF-8: the text fields then
    /// hold a readable escape (`\xFF`), and the files are found by these bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawNames>,
}

/// Names as bytes, for inputs whose names are not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawNames {
    /// The folder inside the inbox.
    pub subdir: Vec<u8>,
    /// The input's name.
    pub file: Vec<u8>,
    /// The sidecar's name.
    pub sidecar: Option<Vec<u8>>,
    /// The mask's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<Vec<u8>>,
}

impl SourceRef {
    /// Describes an input at `subdir/file` (relative to the inbox) and its sidecar's name.
    #[must_use]
    pub fn new(subdir: &Path, file: &std::ffi::OsStr, sidecar: Option<&std::ffi::OsStr>) -> Self {
        use std::os::unix::ffi::OsStrExt;
        let subdir_bytes = subdir.as_os_str().as_bytes();
        let all_utf8 = std::str::from_utf8(subdir_bytes).is_ok()
            && file.to_str().is_some()
            && sidecar.is_none_or(|s| s.to_str().is_some());
        Self {
            subdir: escape_name(subdir_bytes),
            file: escape_name(file.as_bytes()),
            sidecar: sidecar.map(|s| escape_name(s.as_bytes())),
            mask: None,
            raw: (!all_utf8).then(|| RawNames {
                subdir: subdir_bytes.to_vec(),
                file: file.as_bytes().to_vec(),
                sidecar: sidecar.map(|s| s.as_bytes().to_vec()),
                mask: None,
            }),
        }
    }

    /// The same, with the mask `mask` (a name in the image's folder) claimed with it.
    #[must_use]
    pub fn with_mask(mut self, mask: Option<&std::ffi::OsStr>) -> Self {
        use std::os::unix::ffi::OsStrExt;
        let Some(mask) = mask else {
            return self;
        };
        if self.raw.is_none() && mask.to_str().is_none() {
            self.raw = Some(RawNames {
                subdir: self.subdir.as_bytes().to_vec(),
                file: self.file.as_bytes().to_vec(),
                sidecar: self.sidecar.as_ref().map(|s| s.as_bytes().to_vec()),
                mask: None,
            });
        }
        self.mask = Some(escape_name(mask.as_bytes()));
        if let Some(raw) = &mut self.raw {
            raw.mask = Some(mask.as_bytes().to_vec());
        }
        self
    }

    /// Forgets the mask (it vanished before the claim).
    pub fn drop_mask(&mut self) {
        self.mask = None;
        if let Some(raw) = &mut self.raw {
            raw.mask = None;
        }
    }

    /// The mask's name on disk.
    #[must_use]
    pub fn mask_os(&self) -> Option<std::ffi::OsString> {
        use std::os::unix::ffi::OsStrExt;
        match &self.raw {
            Some(raw) => raw
                .mask
                .as_ref()
                .map(|s| std::ffi::OsStr::from_bytes(s).to_os_string()),
            None => self.mask.clone().map(Into::into),
        }
    }

    /// The folder inside the inbox, as a path.
    #[must_use]
    pub fn subdir_path(&self) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        match &self.raw {
            Some(raw) => PathBuf::from(std::ffi::OsStr::from_bytes(&raw.subdir)),
            None => PathBuf::from(&self.subdir),
        }
    }

    /// The input's name on disk.
    #[must_use]
    pub fn file_os(&self) -> std::ffi::OsString {
        use std::os::unix::ffi::OsStrExt;
        match &self.raw {
            Some(raw) => std::ffi::OsStr::from_bytes(&raw.file).to_os_string(),
            None => self.file.clone().into(),
        }
    }

    /// The sidecar's name on disk.
    #[must_use]
    pub fn sidecar_os(&self) -> Option<std::ffi::OsString> {
        use std::os::unix::ffi::OsStrExt;
        match &self.raw {
            Some(raw) => raw
                .sidecar
                .as_ref()
                .map(|s| std::ffi::OsStr::from_bytes(s).to_os_string()),
            None => self.sidecar.clone().map(Into::into),
        }
    }

    /// Forgets the sidecar (it vanished before the claim).
    pub fn drop_sidecar(&mut self) {
        self.sidecar = None;
        if let Some(raw) = &mut self.raw {
            raw.sidecar = None;
        }
    }

    /// The input's path relative to the inbox, as logged.
    #[must_use]
    pub fn rel_path(&self) -> PathBuf {
        Path::new(&self.subdir).join(&self.file)
    }

    /// The input's stem: its name without the last extension, cut to [`MAX_STEM_BYTES`] so
    /// that names built from it (`STEM-remix-N.EXT`, `STEM-JOBID`) fit the 255-byte limit.
    #[must_use]
    pub fn stem(&self) -> &str {
        let stem = match self.file.rsplit_once('.') {
            Some((stem, _)) if !stem.is_empty() => stem,
            _ => &self.file,
        };
        cut_bytes(stem, MAX_STEM_BYTES)
    }

    /// The input's extension, lower-case, without the dot (`""` when none).
    #[must_use]
    pub fn ext(&self) -> String {
        match self.file.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
            _ => String::new(),
        }
    }
}

/// What kind of input a job carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Input {
    /// An image (by its name) to remix.
    Image,
    /// An entry that is quarantined as soon as it is claimed.
    Stray {
        /// Why it cannot be processed.
        reason: Reason,
        /// What to tell the user.
        message: String,
    },
}

/// How far a job has got. Each variant is written to the journal before the step it names
/// starts, so recovery knows what may have happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Stage {
    /// The inputs are being moved into the work area; some may still be in the inbox.
    Claiming,
    /// The inputs are in the work area; nothing was sent.
    Claimed,
    /// A request was (or was about to be) sent; its answer was not recorded.
    Submitting {
        /// 1-based request number.
        attempt: u32,
    },
    /// The API's answer is recorded; the job is never submitted again.
    Responded {
        /// The answer.
        answer: Answer,
    },
    /// `metadata.json` is written; the files folder is moving to `dest`.
    Publishing {
        /// Destination folder in the outbox.
        dest: PathBuf,
    },
    /// `error.json` is written; the files folder is moving to `dest`.
    Quarantining {
        /// Destination folder in the quarantine.
        dest: PathBuf,
        /// What `error.json` says.
        error: Box<ErrorRecord>,
    },
}

impl Stage {
    /// A short name for logs (`claimed`, `submitting`, ...).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Claiming => "claiming",
            Self::Claimed => "claimed",
            Self::Submitting { .. } => "submitting",
            Self::Responded { .. } => "responded",
            Self::Publishing { .. } => "publishing",
            Self::Quarantining { .. } => "quarantining",
        }
    }
}

/// Wall-clock moments of a job, as `metadata.json` reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// First seen in the inbox.
    #[serde(with = "humantime_serde")]
    pub detected_at: Option<SystemTime>,
    /// Moved into the work area.
    #[serde(with = "humantime_serde")]
    pub claimed_at: Option<SystemTime>,
    /// Last request sent.
    #[serde(with = "humantime_serde")]
    pub submitted_at: Option<SystemTime>,
    /// Answer received.
    #[serde(with = "humantime_serde")]
    pub responded_at: Option<SystemTime>,
    /// Time spent waiting for the API, summed over attempts.
    pub api_ms: u64,
    /// Time spent downloading.
    pub download_ms: u64,
}

impl Timings {
    /// Milliseconds from detection until now (0 when unknown).
    #[must_use]
    pub fn total_ms(&self) -> u64 {
        self.detected_at
            .and_then(|t| t.elapsed().ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Everything the journal keeps about one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Journal format; bump when a change would not read old files.
    pub format: u32,
    /// The job's id.
    pub job_id: JobId,
    /// Where the input came from.
    pub source: SourceRef,
    /// What the input is.
    pub input: Input,
    /// Requests sent so far.
    pub attempts: u32,
    /// Requests that may have been billed (SPEC.md's Billing): answered with a 2xx, or left
    /// without an answer after their upload. Journals from before it read as 0.
    #[serde(default)]
    pub billable_attempts: u32,
    /// The request built from the sidecar and defaults, once built.
    pub request: Option<RemixRequest>,
    /// The reference images copied into the job at claim; every attempt sends these copies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<RefCopy>,
    /// Why the references could not be copied at claim (naming the field and path): the job
    /// is quarantined `invalid_sidecar` with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_error: Option<String>,
    /// When things happened.
    pub timings: Timings,
    /// How far it got.
    #[serde(flatten)]
    pub stage: Stage,
}

impl JobRecord {
    /// The operation its request is for (`remix` before the request is built).
    #[must_use]
    pub fn operation(&self) -> crate::sidecar::Operation {
        self.request
            .as_ref()
            .map(|r| r.operation)
            .unwrap_or_default()
    }

    /// Whether the job sends a character reference (priced higher).
    #[must_use]
    pub fn sends_character_reference(&self) -> bool {
        self.references
            .iter()
            .any(|r| r.field == "character_reference_images")
    }

    /// The mask the request sends, by name as recorded and on disk: only an operation that
    /// takes one sends it.
    #[must_use]
    pub fn sent_mask(&self) -> Option<(&str, std::ffi::OsString)> {
        if !self.operation().needs_mask() {
            return None;
        }
        Some((self.source.mask.as_deref()?, self.source.mask_os()?))
    }
}

/// A reference image as copied into the job folder's `refs/` at claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefCopy {
    /// The form field it is sent as (`style_reference_images`, ...).
    pub field: String,
    /// Its path relative to the inbox (escaped if not UTF-8).
    pub file: String,
    /// The copy's name in `refs/`.
    pub copy: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of the bytes sent.
    pub sha256: String,
    /// Its format, from its bytes.
    pub format: crate::image_info::ImageFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// The record a published job's folder holds.
pub const METADATA_FILE: &str = "metadata.json";

/// The record a quarantined job's folder holds.
pub const ERROR_FILE: &str = "error.json";

/// The journal format this build writes.
pub const JOURNAL_FORMAT: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_stems_are_cut_at_a_char_boundary() {
        let long = format!("{}.png", "é".repeat(200));
        let source = SourceRef::new(Path::new(""), std::ffi::OsStr::new(&long), None);
        assert!(source.stem().len() <= MAX_STEM_BYTES);
        assert!(source.stem().chars().all(|c| c == 'é'));
        let short = SourceRef::new(Path::new(""), std::ffi::OsStr::new("cat.tar.png"), None);
        assert_eq!(short.stem(), "cat.tar");
        assert_eq!(short.ext(), "png");
    }
}
