//! Small but real image files: PNG, JPEG and WebP with correct headers (dimensions readable by
//! the `imagesize` crate) and bytes that differ per `seed`, so every file has its own SHA-256.
//! Only headers need to be right: remixd never decodes pixels.

/// A deterministic byte stream from a seed (splitmix64), for pixel and padding bytes.
struct Bytes(u64);

impl Bytes {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for part in parts {
        for &byte in *part {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                let mask = (crc & 1).wrapping_neg();
                crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
            }
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

/// zlib stream made of stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(65_535).collect()
    };
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn png_chunk(out: &mut Vec<u8>, kind: [u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[&kind, data]).to_be_bytes());
}

/// An 8-bit RGB PNG of `width` x `height` around `raw`, the scanlines as the IDAT chunk
/// holds them (each row a filter-type byte, then 3 bytes a pixel): signature, IHDR, IDAT
/// (stored zlib), IEND.
fn rgb_png(width: u32, height: u32, raw: &[u8]) -> Vec<u8> {
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    png_chunk(&mut out, *b"IHDR", &ihdr);
    png_chunk(&mut out, *b"IDAT", &zlib_stored(raw));
    png_chunk(&mut out, *b"IEND", &[]);
    out
}

/// An 8-bit RGB PNG of `width` x `height` with pseudo-random pixels from `seed`.
pub fn png(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut bytes = Bytes::new(seed);
    let row = width as usize * 3;
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for _ in 0..height {
        raw.push(0); // filter type None
        raw.extend(bytes.take(row));
    }
    rgb_png(width, height, &raw)
}

/// A decodable 8-bit RGB PNG of `width` x `height`: a smooth two-colour gradient whose
/// colours come from `seed`, pleasant in a screenshot (browsers decode it; [`png`]'s noise
/// decodes too but looks like static).
pub fn picture(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut bytes = Bytes::new(seed);
    let c = bytes.take(6);
    let mix = |a: u8, b: u8, t: u32, n: u32| {
        let (a, b) = (u32::from(a), u32::from(b));
        ((a * (n - t) + b * t) / n.max(1)) as u8
    };
    let mut raw = Vec::with_capacity((width as usize * 3 + 1) * height as usize);
    for y in 0..height {
        raw.push(0);
        for x in 0..width {
            let t = x + y;
            let n = width + height - 2;
            raw.extend([
                mix(c[0], c[3], t, n),
                mix(c[1], c[4], t, n),
                mix(c[2], c[5], t, n),
            ]);
        }
    }
    rgb_png(width, height, &raw)
}

/// A baseline JPEG header (SOI, APP0 JFIF, a comment with `seed` bytes, SOF0 with the
/// dimensions, EOI): enough for header readers, not for a decoder.
pub fn jpeg(width: u16, height: u16, seed: u64) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    out.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x10]);
    out.extend_from_slice(b"JFIF\0");
    out.extend_from_slice(&[1, 1, 0, 0, 1, 0, 1, 0, 0]);
    let comment = Bytes::new(seed).take(64);
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&((comment.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&comment);
    out.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// An extended WebP (RIFF, `VP8X` with the canvas size, then a private chunk of `seed` bytes).
pub fn webp(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let payload = Bytes::new(seed).take(64);
    let mut body = b"WEBP".to_vec();
    body.extend_from_slice(b"VP8X");
    body.extend_from_slice(&10u32.to_le_bytes());
    body.extend_from_slice(&[0, 0, 0, 0]);
    body.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    body.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
    body.extend_from_slice(b"XTRA");
    body.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    body.extend_from_slice(&payload);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The format name metadata uses for these bytes (`png`, `jpeg`, `webp`), if any.
pub fn format_of(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpeg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("webp")
    } else {
        None
    }
}

/// Width and height of an image made by this module (read back from its header).
pub fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let be32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    let le24 = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], 0]);
    match format_of(bytes)? {
        "png" if bytes.len() >= 24 => Some((be32(16), be32(20))),
        "webp" if bytes.len() >= 30 && &bytes[12..16] == b"VP8X" => {
            Some((le24(24) + 1, le24(27) + 1))
        }
        "jpeg" => {
            let mut at = 2;
            while at + 9 < bytes.len() && bytes[at] == 0xFF {
                let marker = bytes[at + 1];
                let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
                if marker == 0xC0 {
                    let h = u16::from_be_bytes([bytes[at + 5], bytes[at + 6]]);
                    let w = u16::from_be_bytes([bytes[at + 7], bytes[at + 8]]);
                    return Some((u32::from(w), u32::from(h)));
                }
                at += 2 + len;
            }
            None
        }
        _ => None,
    }
}

/// The extension remixd gives outputs of this format (SPEC: "EXT from the bytes").
pub fn ext_for(format: &str) -> &'static str {
    match format {
        "png" => "png",
        "jpeg" => "jpg",
        "webp" => "webp",
        other => panic!("no extension for format {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use remixd::image_info::{ImageFormat, inspect};

    use super::*;

    #[test]
    fn generated_images_have_readable_headers() {
        let cases = [
            (png(64, 48, 1), ImageFormat::Png, 64, 48),
            (jpeg(300, 200, 1), ImageFormat::Jpeg, 300, 200),
            (webp(90, 160, 1), ImageFormat::Webp, 90, 160),
        ];
        for (bytes, format, w, h) in cases {
            assert_eq!(dimensions(&bytes), Some((w, h)));
            let info = inspect(&mut Cursor::new(bytes)).expect("header");
            assert_eq!((info.format, info.width, info.height), (format, w, h));
        }
    }

    #[test]
    fn seeds_make_distinct_files() {
        assert_ne!(png(8, 8, 1), png(8, 8, 2));
        assert_ne!(jpeg(8, 8, 1), jpeg(8, 8, 2));
        assert_ne!(webp(8, 8, 1), webp(8, 8, 2));
    }

    #[test]
    fn png_checksums_are_right() {
        // Known values: CRC-32 of "IEND" and Adler-32 of "Wikipedia".
        assert_eq!(crc32(&[b"IEND"]), 0xAE42_6082);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }
}
