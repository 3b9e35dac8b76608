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
