//! What an image is, from its bytes: format, width and height, read from the header without
//! decoding, and the supported aspect ratio nearest its own. Names and extensions are the
//! inbox's business ([`crate::inbox`]); this module trusts only bytes.

use std::io::{BufRead, Read, Seek};

/// The file name extensions of the images remixd takes (any case).
pub const IMAGE_EXTS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// An image format the Remix API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// Portable Network Graphics.
    Png,
    /// JPEG (JFIF or Exif).
    Jpeg,
    /// WebP (lossy, lossless or extended).
    Webp,
}

impl ImageFormat {
    /// The file extension remixd gives files of this format.
    #[must_use]
    pub fn ext(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }

    /// The media type sent with the upload.
    #[must_use]
    pub fn mime(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }

    /// The name used in `metadata.json` (`"png"`, `"jpeg"`, `"webp"`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Webp => "webp",
        }
    }
}

/// How many leading bytes [`sniff`] needs.
pub const SNIFF_LEN: usize = 12;

/// The format the leading bytes announce, if it is one the API accepts.
#[must_use]
pub fn sniff(head: &[u8]) -> Option<ImageFormat> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some(ImageFormat::Webp)
    } else {
        None
    }
}

/// Format and dimensions of a source image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// The format its bytes announce.
    pub format: ImageFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Why an image could not be described.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The bytes are not PNG, JPEG or WebP.
    #[error("its bytes are not a PNG, JPEG or WebP image")]
    NotAnImage,
    /// The header is damaged or cut short.
    #[error("its {0} header could not be read: {1}")]
    BadHeader(&'static str, String),
    /// Reading failed.
    #[error("reading it failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads format and dimensions from an open file (or any reader), header only.
///
/// # Errors
/// [`ImageError::NotAnImage`] when the magic bytes are wrong, `BadHeader` when the header is
/// damaged, `Io` when reading fails.
pub fn inspect<R: BufRead + Seek>(reader: &mut R) -> Result<ImageInfo, ImageError> {
    reader.rewind()?;
    let mut head = [0u8; SNIFF_LEN];
    let n = read_up_to(reader, &mut head)?;
    let format = sniff(&head[..n]).ok_or(ImageError::NotAnImage)?;
    reader.rewind()?;
    let size = imagesize::reader_size(&mut *reader)
        .map_err(|e| ImageError::BadHeader(format.name(), e.to_string()))?;
    reader.rewind()?;
    let dim = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    if size.width == 0 || size.height == 0 {
        return Err(ImageError::BadHeader(
            format.name(),
            "zero width or height".into(),
        ));
    }
    Ok(ImageInfo {
        format,
        width: dim(size.width),
        height: dim(size.height),
    })
}

fn read_up_to<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The aspect ratios the API accepts, as `W`x`H`.
pub const ASPECT_RATIOS: [&str; 15] = [
    "1x3", "3x1", "1x2", "2x1", "9x16", "16x9", "10x16", "16x10", "2x3", "3x2", "3x4", "4x3",
    "4x5", "5x4", "1x1",
];

/// The supported aspect ratio nearest `width`:`height` (compared on a log scale, so 2:1 and
/// 1:2 are equally far from 1:1).
#[must_use]
pub fn nearest_aspect_ratio(width: u32, height: u32) -> &'static str {
    let own = (f64::from(width.max(1)) / f64::from(height.max(1))).ln();
    let mut best = ("1x1", f64::INFINITY);
    for ratio in ASPECT_RATIOS {
        let (w, h) = ratio.split_once('x').unwrap_or(("1", "1"));
        let r = (w.parse::<f64>().unwrap_or(1.0) / h.parse::<f64>().unwrap_or(1.0)).ln();
        let distance = (r - own).abs();
        if distance < best.1 {
            best = (ratio, distance);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_each_format_and_refuses_others() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\0"), Some(ImageFormat::Png));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(ImageFormat::Jpeg));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(ImageFormat::Webp));
        assert_eq!(sniff(b"GIF89a......"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn nearest_ratio_picks_closest_supported() {
        assert_eq!(nearest_aspect_ratio(1024, 1024), "1x1");
        assert_eq!(nearest_aspect_ratio(1920, 1080), "16x9");
        assert_eq!(nearest_aspect_ratio(1080, 1920), "9x16");
        assert_eq!(nearest_aspect_ratio(3000, 1000), "3x1");
        assert_eq!(nearest_aspect_ratio(10_000, 10), "3x1");
        assert_eq!(nearest_aspect_ratio(800, 600), "4x3");
    }

    #[test]
    fn inspect_reads_png_dimensions_from_header() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&640u32.to_be_bytes());
        png.extend_from_slice(&480u32.to_be_bytes());
        png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        let info = inspect(&mut std::io::Cursor::new(png)).expect("png header");
        assert_eq!(
            (info.format, info.width, info.height),
            (ImageFormat::Png, 640, 480)
        );
    }

    #[test]
    fn inspect_refuses_non_images() {
        let err = inspect(&mut std::io::Cursor::new(
            b"hello world, not an image".to_vec(),
        ));
        assert!(matches!(err, Err(ImageError::NotAnImage)));
    }
}
