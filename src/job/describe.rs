//! Describing a claimed input for `metadata.json` and `error.json`: name, size, SHA-256,
//! format and size in pixels, and the sidecar's hash. Files are read without following links;
//! what cannot be read is left out, never an error. [`hash_file`] is the one hashing helper
//! (downloads re-hashed at recovery use it too).

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::SourceRef;
use crate::image_info::{ImageFormat, SNIFF_LEN, sniff};

/// The input as `metadata.json` and `error.json` describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// File name.
    pub file: String,
    /// Folder inside the inbox, `""` at the root.
    pub subdir: String,
    /// Size in bytes (null for what is not a regular file).
    pub bytes: Option<u64>,
    /// Hex SHA-256 of the bytes.
    pub sha256: Option<String>,
    /// `png`, `jpeg` or `webp`, from the bytes.
    pub format: Option<String>,
    /// Width in pixels.
    pub width: Option<u32>,
    /// Height in pixels.
    pub height: Option<u32>,
}

/// The sidecar as `metadata.json` and `error.json` describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarInfo {
    /// File name.
    pub file: String,
    /// Hex SHA-256 of the bytes.
    pub sha256: Option<String>,
}

/// Describes the claimed input and sidecar in `files`, reading them without following links.
#[must_use]
pub fn describe(files: &Path, source: &SourceRef) -> (SourceInfo, Option<SidecarInfo>) {
    let path = files.join(source.file_os());
    let mut info = SourceInfo {
        file: source.file.clone(),
        subdir: source.subdir.clone(),
        bytes: None,
        sha256: None,
        format: None,
        width: None,
        height: None,
    };
    if let Some(hashed) = hash_file(&path) {
        info.bytes = Some(hashed.bytes);
        info.sha256 = Some(hashed.sha256);
        if let Ok(file) = crate::fsx::open_nofollow(&path) {
            let mut reader = std::io::BufReader::new(file);
            if let Ok(img) = crate::image_info::inspect(&mut reader) {
                info.format = Some(img.format.name().to_owned());
                info.width = Some(img.width);
                info.height = Some(img.height);
            }
        }
    }
    let sidecar = source.sidecar.as_ref().map(|name| SidecarInfo {
        file: name.clone(),
        sha256: source
            .sidecar_os()
            .and_then(|os| hash_file(&files.join(os)))
            .map(|hashed| hashed.sha256),
    });
    (info, sidecar)
}

/// A regular file's size and hash, and the format its first bytes announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    /// Size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// The image format the bytes start with, if any.
    pub format: Option<ImageFormat>,
}

/// Hashes a regular file, never following a link; `None` when it is not one or cannot be read.
#[must_use]
pub fn hash_file(path: &Path) -> Option<Hashed> {
    let mut file = crate::fsx::open_nofollow(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut hasher = sha2::Sha256::new();
    let mut head = Vec::with_capacity(SNIFF_LEN);
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        let room = SNIFF_LEN.saturating_sub(head.len()).min(n);
        head.extend_from_slice(&buf[..room]);
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Some(Hashed {
        bytes,
        sha256: hex::encode(hasher.finalize()),
        format: sniff(&head),
    })
}
