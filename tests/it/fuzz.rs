//! The two parsers that read what strangers write, checked through the library's public API
//! (`remixd::sidecar::parse`, `remixd::api::classify`): the checked-in corpus of hostile
//! inputs under `tests/corpus/` (every file must get its expected verdict, quickly), and
//! property tests feeding them arbitrary and structured-looking input (never a panic, never
//! slow, and the verdicts keep their promises: values in range, `api_error` cut to 4 KiB).
//!
//! Corpus layout: `sidecars/invalid/*` must be refused by `parse`, `sidecars/valid/*`
//! accepted (the extension gives the kind); `api/<kind>/<status>--<name>.*` must classify as
//! `<kind>` (answer, bad, unsafe, rejected, pause, rate, transient).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use remixd::api::response::{API_ERROR_MAX, RETRY_AFTER_MAX};
use remixd::api::{Outcome, classify};
use remixd::sidecar::{self, Fields, SidecarKind};

/// Longer than any parse of 64 KiB may take, even in a debug build on a busy machine.
const SLOW: Duration = Duration::from_secs(2);

fn corpus_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(rel)
}

/// Every file under `dir`, recursively, with its bytes, sorted by path.
fn corpus(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = crate::env::walk_paths(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no corpus at {}", dir.display());
    out
}

fn kind_of(path: &Path) -> SidecarKind {
    let ext = path.extension().unwrap().to_str().unwrap();
    SidecarKind::from_ext(ext).unwrap_or_else(|| panic!("{}: not a sidecar", path.display()))
}

/// Parses, failing the test when it takes longer than [`SLOW`].
fn timed_parse(bytes: &[u8], kind: SidecarKind, what: &str) -> Result<Fields, String> {
    let started = Instant::now();
    let result = sidecar::parse(bytes, kind).map_err(|e| e.to_string());
    let took = started.elapsed();
    assert!(took < SLOW, "{what}: parsing took {took:?}");
    result
}

/// The promises a parsed sidecar keeps, whatever it was parsed from.
fn fields_in_range(f: &Fields) -> Result<(), String> {
    let ok = f.num_images.is_none_or(|n| (1..=8).contains(&n))
        && f.image_weight.is_none_or(|w| (1..=100).contains(&w))
        && f.seed.is_none_or(|s| s <= 2_147_483_647);
    if ok {
        Ok(())
    } else {
        Err(format!("out of range: {f:?}"))
    }
}

/// Issue 4: "Sidecars: YAML alias bombs, deep nesting, huge strings and numbers out of range
/// are refused as invalid_sidecar quickly and in bounded memory". Each refusal says what is
/// wrong in a message of readable length.
#[test]
fn corpus_hostile_sidecars_are_refused_quickly() {
    let mut failures = Vec::new();
    for (path, bytes) in corpus(&corpus_dir("sidecars/invalid")) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match timed_parse(&bytes, kind_of(&path), &name) {
            Ok(fields) => failures.push(format!("{name}: accepted as {fields:?}")),
            Err(message) if message.len() > 1024 => {
                failures.push(format!("{name}: a {}-byte message", message.len()));
            }
            Err(message) if message.trim().is_empty() => {
                failures.push(format!("{name}: refused without a word"));
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Odd but valid sidecars (a byte-order mark, CRLF, small anchors, a long prompt) are
/// accepted and keep their values in range.
#[test]
fn corpus_odd_but_valid_sidecars_are_accepted() {
    for (path, bytes) in corpus(&corpus_dir("sidecars/valid")) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let fields = timed_parse(&bytes, kind_of(&path), &name)
            .unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        fields_in_range(&fields).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// A short name for an outcome's kind, as the corpus folders are named.
fn outcome_kind(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Answer(_) => "answer",
        Outcome::BadResponse { .. } => "bad",
        Outcome::Unsafe { .. } => "unsafe",
        Outcome::Rejected { .. } => "rejected",
        Outcome::Pause { .. } => "pause",
        Outcome::RateLimited { .. } => "rate",
        Outcome::Transient { .. } => "transient",
    }
}

/// The promises every outcome keeps, whatever the answer was.
fn outcome_keeps_promises(outcome: &Outcome) -> Result<(), String> {
    let (api_error, message) = match outcome {
        Outcome::Rejected {
            api_error, message, ..
        }
        | Outcome::Unsafe {
            api_error, message, ..
        }
        | Outcome::BadResponse {
            api_error, message, ..
        }
        | Outcome::Pause {
            api_error, message, ..
        } => (api_error.as_deref(), message.as_str()),
        Outcome::Transient { message, .. } => (None, message.as_str()),
        Outcome::RateLimited { retry_after, .. } => {
            return if retry_after.is_none_or(|d| d <= RETRY_AFTER_MAX) {
                Ok(())
            } else {
                Err(format!("Retry-After {retry_after:?} over the cap"))
            };
        }
        Outcome::Answer(answer) => {
            let usable = answer.items.iter().any(|i| i.url.is_some());
            let unsafe_url = answer
                .items
                .iter()
                .any(|i| !i.is_image_safe && i.url.is_some());
            return if usable && !unsafe_url {
                Ok(())
            } else {
                Err(format!(
                    "an answer with no usable or an unsafe URL: {answer:?}"
                ))
            };
        }
    };
    if api_error.is_some_and(|e| e.len() > API_ERROR_MAX) {
        return Err("api_error over 4 KiB".into());
    }
    if message.trim().is_empty() || message.len() > 2048 {
        return Err(format!("a message of {} bytes", message.len()));
    }
    Ok(())
}

/// Issue 4: "The API's answers are hostile too ... giant JSON". Each checked-in answer
/// classifies as the folder it is in, keeps the outcome's promises, and quickly.
#[test]
fn corpus_hostile_api_answers_classify_as_expected() {
    let root = corpus_dir("api");
    let mut failures = Vec::new();
    for (path, body) in corpus(&root) {
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let (want, file) = rel.split_once('/').unwrap();
        let status: u16 = file.split_once("--").unwrap().0.parse().unwrap();
        let retry_after = (want == "rate").then_some("7");
        let started = Instant::now();
        let outcome = classify(status, retry_after, &body);
        let took = started.elapsed();
        if outcome_kind(&outcome) != want {
            failures.push(format!("{rel}: classified as {outcome:?}"));
        }
        if let Err(e) = outcome_keeps_promises(&outcome) {
            failures.push(format!("{rel}: {e}"));
        }
        if took > SLOW {
            failures.push(format!("{rel}: took {took:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A 9 MiB answer body (the client refuses to read past 8 MiB; the parser itself must not
/// choke on what it is given either).
#[test]
fn a_nine_mib_answer_classifies_quickly() {
    let filler = "x".repeat(9 << 20);
    let body = format!(r#"{{"filler":"{filler}","data":[{{"url":"https://x.example/a.png"}}]}}"#);
    let started = Instant::now();
    let outcome = classify(200, None, body.as_bytes());
    assert!(started.elapsed() < SLOW * 2, "took {:?}", started.elapsed());
    outcome_keeps_promises(&outcome).unwrap();
    if let Outcome::Answer(answer) = &outcome {
        assert_eq!(answer.items.len(), 1);
    }
}

// ---------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------

fn sidecar_kind() -> impl Strategy<Value = SidecarKind> {
    prop_oneof![
        Just(SidecarKind::Text),
        Just(SidecarKind::Yaml),
        Just(SidecarKind::Json)
    ]
}

const KEYS: [&str; 15] = [
    "prompt",
    "negative_prompt",
    "num_images",
    "rendering_speed",
    "image_weight",
    "seed",
    "resolution",
    "aspect_ratio",
    "magic_prompt",
    "style_type",
    "style_preset",
    "style_codes",
    "color_palette",
    "extra_fields",
    "members",
];

/// A scalar as YAML or JSON text, biased towards the values that break parsers.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        (0u8..=9).prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "1e400",
            "-1e400",
            "18446744073709551616",
            "-9223372036854775809",
            ".nan",
            ".inf",
            "-.inf",
            "0x7fffffff",
            "0o17",
            "null",
            "~",
            "OFF",
            "on",
            "yes",
            "true",
            "false",
            "auto",
            "1x1",
            "16x9",
            "1024x1024",
            "AAAAAAAA",
            "\"#ffffff\"",
            "*a",
            "&a x",
            "!!binary aGk=",
            "!tag x",
            "<<",
            "''",
            "\"\"",
            "|",
            ">",
            "-",
            "?",
            ":",
            "%YAML 1.1",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z0-9 _#:.-]{0,16}",
        any::<String>().prop_map(|s| format!("{s:?}")),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
        1 => "[a-z_]{1,10}",
        1 => any::<String>().prop_map(|s| format!("{s:?}")),
    ]
}

/// A flow-style YAML node (JSON-like), nested a few levels.
fn node() -> impl Strategy<Value = String> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|items| format!("[{}]", items.join(", "))),
            vec((key(), inner), 0..6).prop_map(|pairs| {
                let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

/// A sidecar-shaped document: a block map of mostly known keys, sometimes with anchors,
/// aliases, a second document, or a byte spliced in.
fn yamlish() -> impl Strategy<Value = Vec<u8>> {
    let doc = vec((key(), node(), any::<bool>()), 0..10).prop_map(|pairs| {
        let mut text = String::new();
        for (i, (k, v, anchor)) in pairs.iter().enumerate() {
            if *anchor {
                let _ = writeln!(text, "{k}: &a{i} {v}");
            } else if i > 0 && k.len() % 3 == 0 {
                let _ = writeln!(text, "{k}: *a{}", i - 1);
            } else {
                let _ = writeln!(text, "{k}: {v}");
            }
        }
        text.into_bytes()
    });
    (doc, any::<u16>(), any::<u8>(), 0u8..4).prop_map(|(mut doc, at, byte, how)| {
        let at = if doc.is_empty() {
            0
        } else {
            usize::from(at) % doc.len()
        };
        match how {
            0 => doc.insert(at, byte),
            1 => doc.extend_from_slice(b"---\nprompt: second\n"),
            2 => doc.truncate(at),
            _ => {}
        }
        doc
    })
}

/// Arbitrary JSON, for answers and JSON sidecars.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
        prop::sample::select(vec![
            "https://x.example/a.png",
            "file:///etc/passwd",
            "",
            " "
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((key(), inner), 0..6)
                .prop_map(|pairs| { Value::Object(pairs.into_iter().collect()) }),
        ]
    })
}

/// Something shaped like an answer: native or envelope, items with odd field values.
fn answerish() -> impl Strategy<Value = Vec<u8>> {
    let item = (
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
    )
        .prop_map(|(url, safe, seed)| {
            let mut obj = serde_json::Map::new();
            for (k, v) in [("url", url), ("is_image_safe", safe), ("seed", seed)] {
                if let Some(v) = v {
                    obj.insert(k.to_owned(), v);
                }
            }
            serde_json::Value::Object(obj)
        });
    (
        vec(item, 0..5),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
    )
        .prop_map(|(items, code, message)| {
            let mut obj = serde_json::Map::new();
            obj.insert("data".into(), serde_json::Value::Array(items));
            if let Some(code) = code {
                obj.insert("code".into(), code);
            }
            if let Some(message) = message {
                obj.insert("message".into(), message);
            }
            serde_json::Value::Object(obj).to_string().into_bytes()
        })
}

fn retry_after() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        "-?[0-9]{1,30}",
        " *[0-9]{1,6} *",
        "(Mon|Tue|Wed|Sun|Xyz), [0-9]{2} (Jan|Feb|Dec|Foo) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        any::<String>(),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..2048),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        answerish(),
        any::<String>().prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    /// Arbitrary bytes, read as each kind of sidecar: an answer or an error, never a panic.
    #[test]
    fn sidecar_parse_survives_any_bytes(
        bytes in vec(any::<u8>(), 0..4096),
        kind in sidecar_kind(),
    ) {
        if let Ok(fields) = timed_parse(&bytes, kind, "arbitrary bytes") {
            prop_assert!(fields_in_range(&fields).is_ok(), "{:?}", fields);
        }
    }

    /// Sidecar-shaped YAML (known keys, odd values, anchors, aliases, splices), read as
    /// YAML and as JSON.
    #[test]
    fn sidecar_parse_survives_yamlish_documents(doc in yamlish()) {
        for kind in [SidecarKind::Yaml, SidecarKind::Json, SidecarKind::Text] {
            if let Ok(fields) = timed_parse(&doc, kind, "yamlish") {
                prop_assert!(fields_in_range(&fields).is_ok(), "{:?}", fields);
            }
        }
    }

    /// Arbitrary JSON maps, read as JSON and as YAML (JSON is YAML).
    #[test]
    fn sidecar_parse_survives_json_documents(value in json_value()) {
        let text = value.to_string();
        for kind in [SidecarKind::Json, SidecarKind::Yaml] {
            if let Ok(fields) = timed_parse(text.as_bytes(), kind, "json") {
                prop_assert!(fields_in_range(&fields).is_ok(), "{:?}", fields);
            }
        }
    }

    /// Any status, any `Retry-After`, any body: an outcome that keeps its promises, quickly.
    #[test]
    fn classify_survives_any_answer(
        status in prop_oneof![0u16..1000, Just(200u16), Just(429u16)],
        retry in prop::option::of(retry_after()),
        body in body(),
    ) {
        let started = Instant::now();
        let outcome = classify(status, retry.as_deref(), &body);
        prop_assert!(started.elapsed() < SLOW, "took {:?}", started.elapsed());
        let kept = outcome_keeps_promises(&outcome);
        prop_assert!(kept.is_ok(), "{:?}: {:?}", kept, outcome);
    }
}
