//! Reference images (`style_reference_images`, `character_reference_images` and its mask):
//! opened beneath the inbox without following any link, checked (a regular, single-linked
//! image; 10 MB together; the mask the size of its reference) and copied into the job's
//! `refs/` at claim, so every attempt and every resume sends the same bytes whatever happens
//! to the originals. Which paths a job names is the sidecar's business
//! ([`crate::sidecar::Fields::references`]); sending the copies is the API client's.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::fsx::{self, Context, FsError};
use crate::image_info;
use crate::job::RefCopy;
use crate::sidecar::RefPath;
use crate::text::escape_name;

/// The most the reference images of one request may hold together (the API's 10 MB).
pub const MAX_REFERENCE_BYTES: u64 = 10_000_000;

/// What became of copying a job's references: the copies, or what is wrong with one of them
/// (naming the field and the path), which quarantines the job as `invalid_sidecar`.
pub(super) type Copied = Result<Vec<RefCopy>, String>;

/// Copies every reference `wanted` names into `refs` (created if need be), each synced, then
/// `refs` synced once. `Err` is a local failure writing the copies (the claim is retried);
/// `Ok(Err)` a reference the user must fix.
pub(super) fn copy_all(
    inbox: &Path,
    refs: &Path,
    wanted: &[(&'static str, &[RefPath])],
) -> Result<Copied, FsError> {
    if wanted.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    fsx::create_dir_all_durable(refs).context("creating the job's reference folder", refs)?;
    let inbox_fd = match rustix::fs::open(
        inbox,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => return Err(io::Error::from(e)).context("opening the inbox", inbox),
    };
    let mut copies = Vec::new();
    let mut total = 0;
    for (field, paths) in wanted {
        for (i, path) in paths.iter().enumerate() {
            let problem = |m: String| format!("{field}: {}: {m}", path.written);
            let rel = match path.resolve() {
                Ok(rel) => rel,
                Err(m) => return Ok(Err(problem(m))),
            };
            let source = match open_beneath(&inbox_fd, &path.base.join(&path.written), &rel) {
                Ok(source) => source,
                Err(m) => return Ok(Err(problem(m))),
            };
            total += source.len;
            if total > MAX_REFERENCE_BYTES {
                return Ok(Err(problem(format!(
                    "the reference images come to {total} bytes or more together, over the \
                     {MAX_REFERENCE_BYTES} bytes (10 MB) the API takes; use smaller files"
                ))));
            }
            match copy_one(source, refs, field, i, &rel)? {
                Ok(copy) => copies.push(copy),
                Err(m) => return Ok(Err(problem(m))),
            }
        }
    }
    fsx::sync_dir(refs).context("syncing the job's reference folder", refs)?;
    Ok(check_masks(&copies).map(|()| copies))
}

/// A character mask must have its reference's width and height.
fn check_masks(copies: &[RefCopy]) -> Result<(), String> {
    let of = |field: &str| copies.iter().find(|c| c.field == field);
    match (
        of("character_reference_images"),
        of("character_reference_images_mask"),
    ) {
        (Some(image), Some(mask)) if (image.width, image.height) != (mask.width, mask.height) => {
            Err(format!(
                "character_reference_images_mask: {}: is {}x{} but its reference {} is {}x{}; \
                 the mask must have its reference's width and height",
                mask.file, mask.width, mask.height, image.file, image.width, image.height
            ))
        }
        _ => Ok(()),
    }
}

/// A reference opened for reading: a regular file with no other hard link.
struct Source {
    fd: OwnedFd,
    len: u64,
}

/// Opens `path` (relative to the inbox, `..` allowed while it stays inside) beneath the
/// inbox, following no symlink on the way; only a regular, single-linked file is opened for
/// reading (a FIFO or device is never opened but as a path). `rel` is the same path with the
/// `..`s taken by name, walked one folder at a time where `openat2` is missing.
fn open_beneath(inbox: &OwnedFd, path: &Path, rel: &Path) -> Result<Source, String> {
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let open = |flags: OFlags| match rustix::fs::openat2(inbox, path, flags, Mode::empty(), how) {
        Err(Errno::NOSYS) => walk(inbox, rel, flags),
        other => other,
    };
    let as_path = open(OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC).map_err(why)?;
    let stat = rustix::fs::fstat(&as_path).map_err(why)?;
    check_stat(&stat)?;
    let fd = open(OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC)
        .map_err(why)?;
    let again = rustix::fs::fstat(&fd).map_err(why)?;
    if (again.st_dev, again.st_ino) != (stat.st_dev, stat.st_ino) {
        return Err("was replaced while it was being opened; try again".into());
    }
    check_stat(&again)?;
    Ok(Source {
        fd,
        len: u64::try_from(again.st_size).unwrap_or(0),
    })
}

fn check_stat(stat: &rustix::fs::Stat) -> Result<(), String> {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => {}
        FileType::Symlink => {
            return Err("is a symlink; remixd follows no links: put the image itself there".into());
        }
        FileType::Directory => return Err("is a folder, not an image file".into()),
        _ => {
            return Err(
                "is a FIFO, socket or device, not a plain file; remixd never reads those".into(),
            );
        }
    }
    if stat.st_nlink > 1 {
        return Err(
            "has other hard links, so its content could change under remixd; use a plain copy"
                .into(),
        );
    }
    if stat.st_size == 0 {
        return Err("is empty (0 bytes)".into());
    }
    Ok(())
}

/// The `openat2` refusal in words a user can act on.
fn why(e: Errno) -> String {
    match e {
        Errno::NOENT => "is not there (no such file inside the inbox)".into(),
        Errno::LOOP => "has a symlink on its way; remixd follows no links: name the real \
                        folder and file"
            .into(),
        Errno::XDEV => "leads out of the inbox; a reference must be inside it".into(),
        Errno::NOTDIR => "is not there (a part of its path is not a folder)".into(),
        Errno::ACCESS | Errno::PERM => "cannot be read (permission denied)".into(),
        other => format!("cannot be opened ({})", io::Error::from(other)),
    }
}

/// Where `openat2` is missing: one `openat` per folder, each refusing a symlink.
fn walk(inbox: &OwnedFd, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    let names: Vec<&OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(Errno::XDEV),
        })
        .collect::<Result<_, _>>()?;
    let Some((last, folders)) = names.split_last() else {
        return Err(Errno::NOENT);
    };
    let mut dir: Option<OwnedFd> = None;
    for name in folders {
        let at = dir.as_ref().unwrap_or(inbox);
        let next = rustix::fs::openat(
            at,
            *name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| if e == Errno::NOTDIR { Errno::LOOP } else { e })?;
        dir = Some(next);
    }
    rustix::fs::openat(dir.as_ref().unwrap_or(inbox), *last, flags, Mode::empty())
}

/// Copies one opened reference into `refs` as `FIELD-N`, hashed, synced and inspected.
fn copy_one(
    source: Source,
    refs: &Path,
    field: &str,
    index: usize,
    rel: &Path,
) -> Result<Result<RefCopy, String>, FsError> {
    let copy_name = format!("{field}-{}", index + 1);
    let copy = refs.join(&copy_name);
    let (bytes, sha256) = match copy_into(source, &copy)? {
        Ok(done) => done,
        Err(m) => return Ok(Err(m)),
    };
    Ok(inspect(&copy).map(|info| RefCopy {
        field: field.to_owned(),
        file: escape_name(rel.as_os_str().as_bytes()),
        copy: copy_name,
        bytes,
        sha256,
        format: info.format,
        width: info.width,
        height: info.height,
    }))
}

/// Streams the open reference into `dest`, hashing it, and syncs the copy. `Ok(Err)` when
/// the file grew while it was read (it was still being written).
fn copy_into(source: Source, dest: &Path) -> Result<Result<(u64, String), String>, FsError> {
    const ACTION: &str = "copying a reference image into the job";
    let mut reader = File::from(source.fd).take(source.len + 1);
    let mut out = File::create(dest).context(ACTION, dest)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok(Err(format!("cannot be read ({e})"))),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).context(ACTION, dest)?;
        bytes += n as u64;
    }
    if bytes != source.len {
        return Ok(Err(
            "changed size while it was read (still being written?); requeue the job once it is complete".into(),
        ));
    }
    out.sync_all().context(ACTION, dest)?;
    Ok(Ok((bytes, hex::encode(hasher.finalize()))))
}

fn inspect(copy: &Path) -> Result<image_info::ImageInfo, String> {
    let file = File::open(copy).map_err(|e| format!("its copy cannot be read ({e})"))?;
    image_info::inspect(&mut BufReader::new(file)).map_err(|e| match e {
        image_info::ImageError::NotAnImage => {
            "its bytes are not a PNG, JPEG or WebP image, whatever its name says".to_owned()
        }
        other => format!("{other}; re-save it as PNG, JPEG or WebP"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox_fd(dir: &Path) -> OwnedFd {
        rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).expect("inbox")
    }

    #[test]
    fn the_folder_walk_refuses_symlinks_and_reaches_plain_files() {
        let root = tempfile::tempdir().expect("tempdir");
        let inbox = root.path().join("inbox");
        std::fs::create_dir_all(inbox.join("_refs")).expect("refs");
        std::fs::write(inbox.join("_refs/a.png"), b"x").expect("file");
        std::fs::write(root.path().join("outside.png"), b"x").expect("outside");
        std::os::unix::fs::symlink(root.path(), inbox.join("up")).expect("link");
        std::os::unix::fs::symlink(root.path().join("outside.png"), inbox.join("_refs/l.png"))
            .expect("link");
        let fd = inbox_fd(&inbox);
        let flags = OFlags::PATH | OFlags::NOFOLLOW;
        assert!(walk(&fd, Path::new("_refs/a.png"), flags).is_ok());
        assert_eq!(
            walk(&fd, Path::new("up/outside.png"), flags).err(),
            Some(Errno::LOOP)
        );
        let link = walk(&fd, Path::new("_refs/l.png"), flags).expect("the link itself");
        let stat = rustix::fs::fstat(&link).expect("stat");
        assert_eq!(FileType::from_raw_mode(stat.st_mode), FileType::Symlink);
        assert!(check_stat(&stat).is_err());
    }

    #[test]
    fn a_mask_not_the_size_of_its_reference_is_refused() {
        let copy = |field: &str, w, h| RefCopy {
            field: field.into(),
            file: format!("{field}.png"),
            copy: field.into(),
            bytes: 1,
            sha256: String::new(),
            format: image_info::ImageFormat::Png,
            width: w,
            height: h,
        };
        let image = copy("character_reference_images", 10, 20);
        assert!(
            check_masks(&[
                image.clone(),
                copy("character_reference_images_mask", 10, 20)
            ])
            .is_ok()
        );
        let err = check_masks(&[image, copy("character_reference_images_mask", 20, 10)])
            .expect_err("sizes differ");
        assert!(err.contains("20x10") && err.contains("10x20"), "{err}");
    }
}
