//! Small helpers for text remixd shows or builds names from: cutting at a byte limit without
//! splitting a character, and showing names that are not UTF-8.

use std::fmt::Write as _;

/// `text` cut to at most `max_bytes`, at a character boundary.
#[must_use]
pub fn cut_bytes(text: &str, max_bytes: usize) -> &str {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A file name for a multipart part: the stem with every character but ASCII letters,
/// digits and `- _ + .` replaced by `_` (no control character, quote, `;` or non-ASCII can
/// reach a header), at most 64 characters, then `.ext`; `image.ext` when nothing is left.
#[must_use]
pub fn safe_file_name(stem: &str, ext: &str) -> String {
    const MAX_CHARS: usize = 64;
    let cleaned: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_CHARS)
        .collect();
    let cleaned = cleaned.trim_start_matches('.');
    if cleaned.chars().all(|c| matches!(c, '_' | '.' | '-')) {
        return format!("image.{ext}");
    }
    format!("{cleaned}.{ext}")
}

/// A name as readable text: UTF-8 as it is, other bytes as `\xNN`.
#[must_use]
pub fn escape_name(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_are_plain_ascii_with_the_right_extension() {
        assert_eq!(safe_file_name("cat", "png"), "cat.png");
        assert_eq!(safe_file_name("new\nline", "png"), "new_line.png");
        assert_eq!(safe_file_name("a\"b;c=d", "jpg"), "a_b_c_d.jpg");
        assert_eq!(safe_file_name("été", "webp"), "_t_.webp");
        assert_eq!(safe_file_name("\\xFF\\xFE", "png"), "_xFF_xFE.png");
        assert_eq!(safe_file_name("日本", "png"), "image.png");
        assert_eq!(safe_file_name("..hidden", "png"), "hidden.png");
        assert_eq!(safe_file_name(&"x".repeat(250), "png").len(), 68);
    }

    #[test]
    fn cuts_at_a_char_boundary() {
        assert_eq!(cut_bytes("héllo", 2), "h");
        assert_eq!(cut_bytes("héllo", 3), "hé");
        assert_eq!(cut_bytes("abc", 10), "abc");
    }

    #[test]
    fn escapes_only_invalid_bytes() {
        assert_eq!(escape_name(b"caf\xC3\xA9\xFF.png"), "café\\xFF.png");
    }
}
