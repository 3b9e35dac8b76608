//! The prepare stage: checking a claimed input before anything is sent: that it is a regular, single-linked,
//! non-empty image under the size limit, and that the sidecar, the `_defaults.yaml` files and
//! the config's defaults make a valid request. Every refusal here is a quarantine verdict.

use std::io::{BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::ctx::Job;
use crate::config::Config;
use crate::fsx;
use crate::image_info::{self, ImageError, ImageInfo};
use crate::job::verdict::{Reason, Verdict};
use crate::job::{Input, SourceRef};
use crate::sidecar::DEFAULTS_FILE;
use crate::sidecar::{self, Fields, MAX_SIDECAR_BYTES, RemixRequest, RequestError, SidecarKind};

/// The prepare stage: refuses an entry that was never an image, checks the input and records
/// the request built for it. `Err` is the job's verdict.
pub(super) fn run(job: &mut Job) -> Result<ImageInfo, Verdict> {
    if let Input::Stray { reason, message } = &job.rec.input {
        return Err(Verdict::file(*reason, message.clone()));
    }
    if let Some(problem) = &job.rec.reference_error {
        return Err(Verdict::file(
            Reason::InvalidSidecar,
            format!("{problem}; fix the sidecar (or _defaults.yaml) and requeue the job"),
        ));
    }
    let (image, request) = prepare(&job.config, &job.dir.files(), &job.rec.source)?;
    job.rec.request = Some(request);
    Ok(image)
}

/// Checks the input in `files` and builds its request.
pub fn prepare(
    config: &Config,
    files: &Path,
    source: &SourceRef,
) -> Result<(ImageInfo, RemixRequest), Verdict> {
    let image = check_image(config, &files.join(source.file_os()))?;
    let fields = layers(config, files, source)?;
    let request = fields
        .to_request(&image)
        .map_err(|e| request_verdict(source, e))?;
    if request.operation.needs_mask() {
        check_mask(files, source, &image)?;
    }
    Ok((image, request))
}

/// The job's fields: the config's defaults, each `_defaults.yaml` from the inbox root down
/// and the sidecar (in `files`), merged for the operation the strongest of them names. Each
/// layer's reference paths are anchored at its own folder.
pub(super) fn layers(config: &Config, files: &Path, source: &SourceRef) -> Result<Fields, Verdict> {
    let subdir = source.subdir_path();
    let mut defaults = vec![config.defaults.clone()];
    defaults.extend(defaults_layers(&config.inbox, &subdir)?);
    let sidecar = match (&source.sidecar, source.sidecar_os()) {
        (Some(name), Some(os)) => Some(read_sidecar(&files.join(os), name)?.anchor(&subdir)),
        _ => None,
    };
    sidecar::merge_layers(defaults, sidecar).map_err(|e| request_verdict(source, e))
}

fn request_verdict(source: &SourceRef, e: RequestError) -> Verdict {
    match e {
        RequestError::MissingPrompt => Verdict::file(
            Reason::MissingPrompt,
            format!("{}: {e}, then requeue the job", source.file),
        ),
        RequestError::Invalid(m) => Verdict::file(
            Reason::InvalidSidecar,
            format!("{m}; fix the sidecar (or _defaults.yaml) and requeue the job"),
        ),
    }
}

/// The inpaint mask beside the image: there, an image, and the image's width and height.
fn check_mask(files: &Path, source: &SourceRef, image: &ImageInfo) -> Result<(), Verdict> {
    let (Some(name), Some(os)) = (&source.mask, source.mask_os()) else {
        return Err(Verdict::file(
            Reason::MissingMask,
            format!(
                "inpaint needs a mask beside the image, named {}.mask.png (black = repaint, \
                 white = keep, the image's size); drop it in and requeue the job",
                source.stem()
            ),
        ));
    };
    let bad = |m: String| {
        Verdict::file(
            Reason::InvalidSidecar,
            format!("mask {name}: {m}; fix the mask and requeue the job"),
        )
    };
    let file = fsx::open_nofollow(&files.join(os))
        .map_err(|e| bad(format!("cannot be read as a plain file ({e})")))?;
    let mask = image_info::inspect(&mut BufReader::new(file))
        .map_err(|e| bad(format!("is not a PNG, JPEG or WebP image ({e})")))?;
    if (mask.width, mask.height) != (image.width, image.height) {
        return Err(bad(format!(
            "is {}x{} but the image is {}x{}; the mask must have the image's width and height",
            mask.width, mask.height, image.width, image.height
        )));
    }
    Ok(())
}

fn check_image(config: &Config, path: &Path) -> Result<ImageInfo, Verdict> {
    let not_regular = |what: &str| {
        Verdict::file(
            Reason::NotRegularFile,
            format!(
                "{what}; remixd only reads plain files. Put a copy of the image itself in the inbox"
            ),
        )
    };
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| not_regular(&format!("it cannot be examined ({e})")))?;
    if !meta.file_type().is_file() {
        return Err(not_regular(
            "it is a symlink, FIFO, socket or device, not a plain file",
        ));
    }
    let file = fsx::open_nofollow(path)
        .map_err(|e| not_regular(&format!("it cannot be opened as a plain file ({e})")))?;
    let meta = file
        .metadata()
        .map_err(|e| not_regular(&format!("it cannot be examined ({e})")))?;
    if !meta.is_file() {
        return Err(not_regular("it is not a plain file"));
    }
    if meta.nlink() > 1 {
        return Err(not_regular(
            "it has other hard links, so its content could change under remixd",
        ));
    }
    if meta.len() == 0 {
        return Err(Verdict::file(
            Reason::EmptyFile,
            "the file is empty (0 bytes); copy it again and requeue the job",
        ));
    }
    let max = config.limits.max_image_bytes;
    if meta.len() > max {
        return Err(Verdict::file(
            Reason::TooLarge,
            format!(
                "the image is {} bytes, over the limit of {max} bytes (limits.max_image_bytes; the provider's own limit unless set); shrink it and drop it in again",
                meta.len()
            ),
        ));
    }
    image_info::inspect(&mut BufReader::new(file)).map_err(|e| match e {
        ImageError::NotAnImage => Verdict::file(Reason::UnsupportedFormat,
            "its bytes are not a PNG, JPEG or WebP image, whatever its name says; convert it to one of those and drop it in again"),
        other => Verdict::file(Reason::UnsupportedFormat, format!(
            "{other}; re-save the image as PNG, JPEG or WebP and drop it in again")),
    })
}

/// The `_defaults.yaml` layers for an image in `subdir`, from the inbox root down.
fn defaults_layers(inbox: &Path, subdir: &Path) -> Result<Vec<Fields>, Verdict> {
    let mut layers = Vec::new();
    let mut dir = inbox.to_path_buf();
    let mut rel = String::new();
    let mut parts: Vec<&std::ffi::OsStr> = vec![std::ffi::OsStr::new("")];
    parts.extend(subdir.iter());
    for part in parts {
        if !part.is_empty() {
            dir.push(part);
            let shown = part.to_string_lossy();
            rel = if rel.is_empty() {
                shown.into_owned()
            } else {
                format!("{rel}/{shown}")
            };
        }
        let path = dir.join(DEFAULTS_FILE);
        if std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        let shown = if rel.is_empty() {
            DEFAULTS_FILE.to_owned()
        } else {
            format!("{rel}/{DEFAULTS_FILE}")
        };
        let bytes = read_capped(&path).map_err(|m| invalid(&shown, &m))?;
        let folder = dir.strip_prefix(inbox).unwrap_or(Path::new(""));
        layers.push(
            sidecar::parse(&bytes, SidecarKind::Yaml)
                .map_err(|e| invalid(&shown, &e.to_string()))?
                .anchor(folder),
        );
    }
    Ok(layers)
}

fn read_sidecar(path: &Path, name: &str) -> Result<Fields, Verdict> {
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    let kind = SidecarKind::from_ext(ext).unwrap_or(SidecarKind::Text);
    let bytes = read_capped(path).map_err(|m| invalid(name, &m))?;
    sidecar::parse(&bytes, kind).map_err(|e| invalid(name, &e.to_string()))
}

fn invalid(name: &str, problem: &str) -> Verdict {
    Verdict::file(
        Reason::InvalidSidecar,
        format!("{name}: {problem}; fix it and requeue the job"),
    )
}

/// Reads a small text file without following links, refusing more than the sidecar cap.
fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    let file =
        fsx::open_nofollow(path).map_err(|e| format!("cannot be read as a plain file ({e})"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot be examined ({e})"))?;
    if !meta.is_file() {
        return Err("is not a plain file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_SIDECAR_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read ({e})"))?;
    if bytes.len() > MAX_SIDECAR_BYTES {
        return Err(format!("is larger than {} KiB", MAX_SIDECAR_BYTES / 1024));
    }
    Ok(bytes)
}
