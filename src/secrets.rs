//! Keeping the API key out of everything remixd writes. The key is registered once; every log
//! line, `metadata.json` and `error.json` passes through [`scrub`], which replaces it with
//! `***` wherever it appears, even inside text the API sent back (an echoed header, a URL
//! with `?key=`). [`crate::config::ApiKey`] already prints `***`; this catches the copies.

use std::borrow::Cow;
use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Shortest secret scrubbed: anything shorter would replace ordinary words.
const MIN_LEN: usize = 6;

/// Registers a secret to scrub from now on.
pub fn register(secret: &str) {
    if secret.len() < MIN_LEN {
        return;
    }
    if let Ok(mut list) = SECRETS.write() {
        if !list.iter().any(|s| s == secret) {
            list.push(secret.to_owned());
        }
    }
}

/// `text` with every registered secret replaced by `***`.
#[must_use]
pub fn scrub(text: &str) -> Cow<'_, str> {
    let Ok(list) = SECRETS.read() else {
        return Cow::Borrowed(text);
    };
    let mut out = Cow::Borrowed(text);
    for secret in list.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), "***"));
        }
    }
    out
}

/// A log line with every registered secret replaced: borrowed as it is (no copy, one scan
/// per secret) unless a secret is in it.
#[must_use]
pub fn scrub_line(line: &[u8]) -> Cow<'_, [u8]> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Cow::Borrowed(line);
    };
    match scrub(text) {
        Cow::Borrowed(_) => Cow::Borrowed(line),
        Cow::Owned(clean) => Cow::Owned(clean.into_bytes()),
    }
}

/// `bytes` (UTF-8 text such as a JSON document) with every registered secret replaced.
#[must_use]
pub fn scrub_bytes(bytes: Vec<u8>) -> Vec<u8> {
    match String::from_utf8(bytes) {
        Ok(text) => match scrub(&text) {
            Cow::Borrowed(_) => text.into_bytes(),
            Cow::Owned(clean) => clean.into_bytes(),
        },
        Err(e) => e.into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_scrubbed_and_short_ones_ignored() {
        register("sk-unit-test-secret-123");
        register("abc");
        assert_eq!(
            scrub("Bearer sk-unit-test-secret-123 refused; url?key=sk-unit-test-secret-123"),
            "Bearer *** refused; url?key=***"
        );
        assert_eq!(scrub("abc stays"), "abc stays");
        assert_eq!(
            scrub_bytes(b"{\"m\":\"sk-unit-test-secret-123\"}".to_vec()),
            b"{\"m\":\"***\"}"
        );
    }
}
