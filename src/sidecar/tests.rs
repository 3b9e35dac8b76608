//! Unit tests of sidecar parsing, layering and request building.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::*;
use crate::image_info::{ImageFormat, ImageInfo};

fn yaml(text: &str) -> Result<Fields, SidecarError> {
    parse(text.as_bytes(), SidecarKind::Yaml)
}

fn yaml_err(text: &str) -> String {
    yaml(text).expect_err(text).0
}

fn image(width: u32, height: u32) -> ImageInfo {
    ImageInfo {
        format: ImageFormat::Png,
        width,
        height,
    }
}

fn prompt(p: &str) -> Fields {
    Fields {
        prompt: Some(p.to_owned()),
        ..Fields::default()
    }
}

fn sent(fields: &Fields) -> Vec<(String, String)> {
    fields
        .to_request(&image(1024, 1024))
        .expect("request")
        .fields
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn text_sidecar_is_the_trimmed_prompt() {
    let f = parse("\u{feff}  a cat in a hat\n\n".as_bytes(), SidecarKind::Text).unwrap();
    assert_eq!(f, prompt("a cat in a hat"));
    let empty = parse(b" \n\t\n", SidecarKind::Text).unwrap();
    assert_eq!(empty, Fields::default());
    // A .txt is never read as YAML, even when it looks like it.
    let literal = parse(b"seed: 5", SidecarKind::Text).unwrap();
    assert_eq!(literal.prompt.as_deref(), Some("seed: 5"));
}

const FULL_YAML: &str = r##"
prompt: |
  a cat in a hat
negative_prompt: blurry
num_images: 2
rendering_speed: turbo
image_weight: 80
seed: 2147483647
resolution: 1024X768
magic_prompt: off
style_preset: bright_art
style_codes: [AbCdEf01, 12345678]
color_palette: {members: [{color_hex: "#FF8800", color_weight: 0.5}, {color_hex: "#000000"}]}
extra_fields: {new_knob: 3, label: hi}
"##;

#[test]
fn yaml_sidecar_reads_every_field_and_normalises_case() {
    let f = yaml(FULL_YAML).unwrap();
    assert_eq!(f.prompt.as_deref(), Some("a cat in a hat"));
    assert_eq!(f.negative_prompt.as_deref(), Some("blurry"));
    assert_eq!(f.num_images, Some(2));
    assert_eq!(f.rendering_speed.as_deref(), Some("TURBO"));
    assert_eq!(f.image_weight, Some(80));
    assert_eq!(f.seed, Some(2_147_483_647));
    assert_eq!(f.resolution.as_deref(), Some("1024x768"));
    assert_eq!(f.magic_prompt.as_deref(), Some("OFF"));
    assert_eq!(f.style_preset.as_deref(), Some("BRIGHT_ART"));
    let codes = vec!["AbCdEf01".to_owned(), "12345678".to_owned()];
    assert_eq!(f.style_codes, Some(codes));
    let palette = serde_json::json!({"members": [
        {"color_hex": "#FF8800", "color_weight": 0.5}, {"color_hex": "#000000"}]});
    assert_eq!(f.color_palette, Some(palette));
    assert_eq!(f.extra_fields["new_knob"], serde_json::json!(3));
    assert_eq!(f.extra_fields["label"], serde_json::json!("hi"));
}

#[test]
fn json_sidecar_reads_the_same_fields_as_yaml() {
    let json = r##"{"prompt": "a cat in a hat\n", "negative_prompt": "blurry",
        "num_images": "2", "rendering_speed": "Turbo", "image_weight": 80,
        "seed": 2147483647, "resolution": "1024x768", "magic_prompt": false,
        "style_preset": "BRIGHT_ART", "style_codes": ["AbCdEf01", "12345678"],
        "color_palette": {"members": [{"color_hex": "#FF8800", "color_weight": 0.5},
                                      {"color_hex": "#000000"}]},
        "extra_fields": {"new_knob": 3, "label": "hi"}}"##;
    let from_json = parse(json.as_bytes(), SidecarKind::Json).unwrap();
    assert_eq!(from_json, yaml(FULL_YAML).unwrap());
    let bad = parse(b"{\"prompt\": \"x\",}", SidecarKind::Json).unwrap_err();
    assert!(bad.0.starts_with("bad JSON"), "{bad}");
    let two = parse(b"{} {}", SidecarKind::Json).unwrap_err();
    assert!(two.0.starts_with("bad JSON"), "{two}");
}

#[test]
fn yaml_follows_the_1_2_core_schema() {
    assert_eq!(
        yaml("magic_prompt: OFF").unwrap().magic_prompt.as_deref(),
        Some("OFF")
    );
    assert_eq!(
        yaml("magic_prompt: on").unwrap().magic_prompt.as_deref(),
        Some("ON")
    );
    assert_eq!(
        yaml("magic_prompt: true").unwrap().magic_prompt.as_deref(),
        Some("ON")
    );
    assert_eq!(
        yaml("magic_prompt: false").unwrap().magic_prompt.as_deref(),
        Some("OFF")
    );
    assert_eq!(yaml("prompt: yes").unwrap().prompt.as_deref(), Some("yes"));
    assert_eq!(yaml("prompt: 'no'").unwrap().prompt.as_deref(), Some("no"));
    assert_eq!(yaml("seed: 012").unwrap().seed, Some(12));
}

#[test]
fn unknown_key_is_named_with_the_allowed_keys() {
    let msg = yaml_err("prompt: x\nnum_image: 2");
    assert!(msg.contains("\"num_image\""), "{msg}");
    assert!(msg.contains("prompt, negative_prompt, num_images"), "{msg}");
    assert!(msg.contains("extra_fields"), "{msg}");
    let upper = yaml_err("Prompt: x");
    assert!(upper.contains("\"Prompt\""), "{upper}");
}

#[test]
fn out_of_range_and_malformed_numbers_are_refused_by_name() {
    for (doc, want) in [
        ("num_images: 12", "num_images: 12 is out of range 1–8"),
        ("num_images: 0", "num_images: 0 is out of range 1–8"),
        ("num_images: '9'", "num_images: 9 is out of range 1–8"),
        (
            "num_images: two",
            "num_images: \"two\" is not a whole number",
        ),
        ("num_images: 2.5", "num_images: 2.5 is not a whole number"),
        (
            "num_images: [2]",
            "num_images: expected a whole number, found a list",
        ),
        ("image_weight: 0", "image_weight: 0 is out of range 1–100"),
        (
            "image_weight: 101",
            "image_weight: 101 is out of range 1–100",
        ),
        ("seed: -1", "seed: -1 is out of range 0–2147483647"),
        (
            "seed: 2147483648",
            "seed: 2147483648 is out of range 0–2147483647",
        ),
        (
            "seed: 99999999999999999999999",
            "seed: 99999999999999999999999 is out of range 0–2147483647",
        ),
        (
            "seed: true",
            "seed: expected a whole number, found true/false",
        ),
    ] {
        assert_eq!(yaml_err(doc), want, "{doc}");
    }
}

#[test]
fn bad_enum_and_format_values_are_refused_by_name() {
    for (doc, want) in [
        (
            "rendering_speed: fast",
            "rendering_speed: \"fast\" is not one of FLASH",
        ),
        (
            "magic_prompt: maybe",
            "magic_prompt: \"maybe\" is not one of AUTO, ON, OFF",
        ),
        (
            "style_type: anime",
            "style_type: \"anime\" is not one of AUTO, GENERAL",
        ),
        (
            "aspect_ratio: 7x5",
            "aspect_ratio: \"7x5\" is not auto or one of 1x3",
        ),
        ("aspect_ratio: '16:9'", "(write it with an x, e.g. 16x9)"),
        ("resolution: big", "resolution: \"big\" is not WIDTHxHEIGHT"),
        (
            "resolution: '0x100'",
            "resolution: \"0x100\" is not WIDTHxHEIGHT",
        ),
        (
            "style_codes: [xyz]",
            "style_codes: \"xyz\" is not 8 hex digits",
        ),
        ("style_codes: []", "style_codes: the list is empty"),
        (
            "style_codes: {a: b}",
            "style_codes: expected a list of 8-hex-digit codes",
        ),
        ("style_preset: ''", "style_preset: is empty"),
        ("prompt: [a, b]", "prompt: expected text, found a list"),
        (
            "prompt: 42",
            "prompt: expected text, found a number; put it in quotes",
        ),
    ] {
        let msg = yaml_err(doc);
        assert!(msg.starts_with(want) || msg.contains(want), "{doc}: {msg}");
    }
}

#[test]
fn enum_values_take_any_case_and_aspect_ratio_any_x() {
    let f = yaml("rendering_speed: qUaLiTy\nstyle_type: Realistic\naspect_ratio: 16X9").unwrap();
    assert_eq!(f.rendering_speed.as_deref(), Some("QUALITY"));
    assert_eq!(f.style_type.as_deref(), Some("REALISTIC"));
    assert_eq!(f.aspect_ratio, Some(AspectRatio::Fixed("16x9".into())));
    assert_eq!(
        yaml("aspect_ratio: AUTO").unwrap().aspect_ratio,
        Some(AspectRatio::Auto)
    );
}

#[test]
fn numbers_written_as_text_are_accepted() {
    let f = yaml("num_images: \"2\"\nimage_weight: ' 50 '\nseed: '0'").unwrap();
    assert_eq!(
        (f.num_images, f.image_weight, f.seed),
        (Some(2), Some(50), Some(0))
    );
    let single = yaml("style_codes: 'DEADBEEF'").unwrap();
    assert_eq!(single.style_codes, Some(vec!["DEADBEEF".to_owned()]));
}

#[test]
fn color_palette_shapes_are_checked() {
    let named = yaml("color_palette: {name: pastel}").unwrap();
    assert_eq!(
        named.color_palette,
        Some(serde_json::json!({"name": "PASTEL"}))
    );
    for (doc, want) in [
        (
            "color_palette: pastel",
            "color_palette: expected {name: PRESET}",
        ),
        ("color_palette: {}", "give exactly one of the two"),
        (
            "color_palette: {name: a, members: []}",
            "give exactly one of the two",
        ),
        (
            "color_palette: {colour: a}",
            "color_palette: unknown key \"colour\"",
        ),
        (
            "color_palette: {members: []}",
            "color_palette.members: the list is empty",
        ),
        (
            "color_palette: {members: [{color_hex: red}]}",
            "color_palette.members[0].color_hex: \"red\" is not #RRGGBB",
        ),
        (
            "color_palette: {members: [{color_hex: '#FFFFFF', color_weight: 2}]}",
            "color_palette.members[0].color_weight: 2 is not a number from 0 to 1",
        ),
        (
            "color_palette: {members: [{color_weight: 0.1}]}",
            "color_palette.members[0]: color_hex is missing",
        ),
        (
            "color_palette: {members: [{color_hex: '#FFFFFF', alpha: 1}]}",
            "color_palette.members[0]: unknown key \"alpha\"",
        ),
    ] {
        let msg = yaml_err(doc);
        assert!(msg.starts_with(want) || msg.contains(want), "{doc}: {msg}");
    }
}

#[test]
fn extra_fields_may_not_shadow_known_fields() {
    for name in ["prompt", "image", "style_codes"] {
        let msg = yaml_err(&format!("extra_fields: {{{name}: x}}"));
        assert!(msg.starts_with("extra_fields: \""), "{msg}");
        assert!(msg.contains(name), "{msg}");
    }
    let msg = yaml_err("extra_fields: [a]");
    assert!(
        msg.contains("expected a map of name: value, found a list"),
        "{msg}"
    );
}

#[test]
fn empty_null_and_non_map_documents() {
    assert_eq!(yaml("").unwrap(), Fields::default());
    assert_eq!(yaml("# just a comment\n").unwrap(), Fields::default());
    assert_eq!(yaml("null").unwrap(), Fields::default());
    assert_eq!(yaml("~\n").unwrap(), Fields::default());
    assert_eq!(yaml("seed:\nprompt: x").unwrap(), prompt("x"));
    assert_eq!(
        parse(b"null", SidecarKind::Json).unwrap(),
        Fields::default()
    );
    let msg = yaml_err("- a\n- b");
    assert!(
        msg.contains("expected a map of fields") && msg.contains("a list"),
        "{msg}"
    );
    let msg = yaml_err("just a prompt without a key");
    assert!(msg.contains("found text"), "{msg}");
    assert!(
        yaml("prompt: [unclosed")
            .unwrap_err()
            .0
            .starts_with("bad YAML")
    );
    assert!(yaml("---\nprompt: a\n---\nprompt: b\n").is_err());
}

#[test]
fn duplicate_keys_and_tags_are_refused() {
    let msg = yaml_err("prompt: a\nprompt: b");
    assert!(msg.contains("\"prompt\" appears twice"), "{msg}");
    let msg = yaml_err("prompt: !shout a");
    assert!(msg.contains("tags"), "{msg}");
    let msg = parse(br#"{"seed": 1, "seed": 2}"#, SidecarKind::Json).unwrap_err();
    assert!(msg.0.contains("appears twice"), "{msg}");
}

#[test]
fn size_cap_is_64_kib() {
    let at_cap = format!("prompt: {}", "a".repeat(MAX_SIDECAR_BYTES - 8));
    assert_eq!(at_cap.len(), MAX_SIDECAR_BYTES);
    assert!(yaml(&at_cap).is_ok());
    let over = format!("{at_cap}b");
    let msg = yaml_err(&over);
    assert!(
        msg.contains("65537 bytes") && msg.contains("64 KiB"),
        "{msg}"
    );
    let text = "x".repeat(MAX_SIDECAR_BYTES + 1);
    assert!(parse(text.as_bytes(), SidecarKind::Text).is_err());
}

#[test]
fn non_utf8_is_refused() {
    let err = parse(b"prompt: caf\xe9", SidecarKind::Yaml).unwrap_err();
    assert!(
        err.0.contains("not UTF-8") && err.0.contains("offset 11"),
        "{err}"
    );
    assert!(parse(b"\xff\xfe", SidecarKind::Text).is_err());
    assert!(parse(b"\"\xc3\"", SidecarKind::Json).is_err());
}

#[test]
fn billion_laughs_is_refused_quickly() {
    let mut doc = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        let refs = vec![format!("*a{p}"); 9].join(", ");
        writeln!(doc, "a{i}: &a{i} [{refs}]").unwrap();
    }
    // Padding raises the parser's own alias limit (it scales with the event count).
    writeln!(doc, "pad: [{}]", vec!["0"; 20_000].join(",")).unwrap();
    assert!(doc.len() <= MAX_SIDECAR_BYTES);
    let started = Instant::now();
    assert!(yaml(&doc).is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn one_long_text_repeated_by_aliases_is_refused() {
    // Each alias is four bytes but copies 32 KiB: 512 MiB if nothing stops it.
    let long = "x".repeat(32 * 1024);
    let refs = vec!["*a"; 7_000].join(",");
    let doc = format!("extra_fields:\n  big: &a {long}\n  copies: [{refs}]\n");
    assert!(doc.len() <= MAX_SIDECAR_BYTES);
    let msg = yaml_err(&doc);
    assert!(msg.contains("bytes of text"), "{msg}");
}

#[test]
fn deep_nesting_is_refused() {
    let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let ok = format!("extra_fields: {{x: {}}}", deep(28));
    assert!(yaml(&ok).is_ok());
    let msg = yaml_err(&format!("extra_fields: {{x: {}}}", deep(40)));
    assert!(msg.contains("nested deeper than 32"), "{msg}");
    let json = format!("{{\"extra_fields\": {{\"x\": {}}}}}", deep(40));
    let msg = parse(json.as_bytes(), SidecarKind::Json).unwrap_err();
    assert!(msg.0.contains("nested deeper than 32"), "{msg}");
    let very_deep = format!("extra_fields: {{x: {}}}", deep(3_000));
    assert!(yaml(&very_deep).is_err());
}

#[test]
fn config_defaults_are_read_from_a_yaml_value() {
    let value: serde_yaml::Value =
        serde_yaml::from_str("num_images: 1\nrendering_speed: default\naspect_ratio: auto")
            .unwrap();
    let f = from_yaml_value(&value).unwrap();
    assert_eq!(f.num_images, Some(1));
    assert_eq!(f.rendering_speed.as_deref(), Some("DEFAULT"));
    assert_eq!(f.aspect_ratio, Some(AspectRatio::Auto));
    let bad: serde_yaml::Value = serde_yaml::from_str("rendering_sped: x").unwrap();
    assert!(
        from_yaml_value(&bad)
            .unwrap_err()
            .0
            .contains("\"rendering_sped\"")
    );
    assert_eq!(
        from_yaml_value(&serde_yaml::Value::Null).unwrap(),
        Fields::default()
    );
}

#[test]
fn overlay_stronger_wins_field_by_field() {
    let weak = yaml("prompt: weak\nseed: 1\nnum_images: 3\nextra_fields: {a: 1, b: 1}").unwrap();
    let strong = yaml("prompt: strong\nnegative_prompt: fog\nextra_fields: {b: 2, c: 2}").unwrap();
    let merged = weak.overlay(strong);
    assert_eq!(merged.prompt.as_deref(), Some("strong"));
    assert_eq!(merged.negative_prompt.as_deref(), Some("fog"));
    assert_eq!((merged.seed, merged.num_images), (Some(1), Some(3)));
    let extra: Vec<_> = merged
        .extra_fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert_eq!(extra, ["a=1", "b=2", "c=2"]);
}

#[test]
fn overlay_drops_the_weaker_half_of_an_exclusive_pair() {
    let weak = yaml("aspect_ratio: 16x9\nstyle_type: design").unwrap();
    let strong = yaml("resolution: 1024x1024\nstyle_codes: [DEADBEEF]").unwrap();
    let merged = weak.clone().overlay(strong.clone());
    assert_eq!(merged.aspect_ratio, None);
    assert_eq!(merged.style_type, None);
    assert_eq!(merged.resolution.as_deref(), Some("1024x1024"));
    let back = strong.overlay(weak);
    assert_eq!(back.resolution, None);
    assert_eq!(back.style_codes, None);
    assert_eq!(back.style_type.as_deref(), Some("DESIGN"));
    // Both halves in the one (stronger) layer stay, for to_request to refuse.
    let both = yaml("resolution: 1024x1024\naspect_ratio: 1x1").unwrap();
    let kept = Fields::default().overlay(both);
    assert!(kept.resolution.is_some() && kept.aspect_ratio.is_some());
}

#[test]
fn request_fields_are_sent_in_form_order() {
    let f = yaml(FULL_YAML).unwrap();
    let got = f.to_request(&image(640, 480)).unwrap();
    assert_eq!(got.num_images, 2);
    let palette =
        r##"{"members":[{"color_hex":"#FF8800","color_weight":0.5},{"color_hex":"#000000"}]}"##;
    assert_eq!(
        got.fields,
        pairs(&[
            ("prompt", "a cat in a hat"),
            ("negative_prompt", "blurry"),
            ("num_images", "2"),
            ("rendering_speed", "TURBO"),
            ("image_weight", "80"),
            ("seed", "2147483647"),
            ("resolution", "1024x768"),
            ("magic_prompt", "OFF"),
            ("style_preset", "BRIGHT_ART"),
            ("style_codes", "AbCdEf01"),
            ("style_codes", "12345678"),
            ("color_palette", palette),
            ("label", "hi"),
            ("new_knob", "3"),
        ])
    );
}

#[test]
fn auto_aspect_ratio_follows_the_image_unless_resolution_is_set() {
    let auto = yaml("prompt: p\naspect_ratio: auto").unwrap();
    let wide = auto.to_request(&image(1920, 1080)).unwrap().fields;
    assert_eq!(wide, pairs(&[("prompt", "p"), ("aspect_ratio", "16x9")]));
    let tall = auto.to_request(&image(600, 1800)).unwrap().fields;
    assert_eq!(tall[1], ("aspect_ratio".to_owned(), "1x3".to_owned()));
    let with_res = yaml("prompt: p\naspect_ratio: auto\nresolution: 1024x1024").unwrap();
    assert_eq!(
        sent(&with_res),
        pairs(&[("prompt", "p"), ("resolution", "1024x1024")])
    );
    let fixed = yaml("prompt: p\naspect_ratio: 4x3").unwrap();
    assert_eq!(
        sent(&fixed),
        pairs(&[("prompt", "p"), ("aspect_ratio", "4x3")])
    );
}

#[test]
fn exclusive_pairs_in_one_layer_are_invalid() {
    let both = yaml("prompt: p\naspect_ratio: 1x1\nresolution: 1024x1024").unwrap();
    let Err(RequestError::Invalid(msg)) = both.to_request(&image(1, 1)) else {
        panic!("resolution with aspect_ratio accepted");
    };
    assert!(
        msg.contains("resolution (1024x1024) and aspect_ratio (1x1)"),
        "{msg}"
    );
    let style = yaml("prompt: p\nstyle_type: general\nstyle_codes: DEADBEEF").unwrap();
    let Err(RequestError::Invalid(msg)) = style.to_request(&image(1, 1)) else {
        panic!("style_codes with style_type accepted");
    };
    assert!(
        msg.contains("style_codes (DEADBEEF) and style_type (GENERAL)"),
        "{msg}"
    );
}

#[test]
fn missing_or_blank_prompt_is_missing() {
    let none = yaml("seed: 3").unwrap();
    assert_eq!(
        none.to_request(&image(1, 1)),
        Err(RequestError::MissingPrompt)
    );
    let blank = yaml("prompt: '  '").unwrap();
    assert_eq!(
        blank.to_request(&image(1, 1)),
        Err(RequestError::MissingPrompt)
    );
    // An explicit empty prompt in a stronger layer overrides a weaker one.
    let merged = prompt("from defaults").overlay(yaml("prompt: ''").unwrap());
    assert_eq!(
        merged.to_request(&image(1, 1)),
        Err(RequestError::MissingPrompt)
    );
}

#[test]
fn unset_fields_default_and_are_not_sent() {
    let got = prompt("p").to_request(&image(1, 1)).unwrap();
    assert_eq!(got.num_images, 1);
    assert_eq!(got.fields, pairs(&[("prompt", "p")]));
}

#[test]
fn extra_fields_pass_through_and_null_takes_one_back() {
    let weak = yaml("prompt: p\nextra_fields: {gone: 1, kept: true}").unwrap();
    let strong = yaml("extra_fields: {gone: null, obj: {k: [1, x]}, s: 'a b'}").unwrap();
    let fields = sent(&weak.overlay(strong));
    assert_eq!(
        fields,
        pairs(&[
            ("prompt", "p"),
            ("kept", "true"),
            ("obj", r#"{"k":[1,"x"]}"#),
            ("s", "a b")
        ])
    );
    let cleared = yaml("prompt: p\nnegative_prompt: ''").unwrap();
    assert_eq!(sent(&cleared), pairs(&[("prompt", "p")]));
}

fn candidates(name: &[u8]) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt;
    sidecar_candidates(std::ffi::OsStr::from_bytes(name))
        .iter()
        .map(|c| crate::text::escape_name(c.as_bytes()))
        .collect()
}

#[test]
fn candidates_try_full_name_then_stem() {
    assert_eq!(
        candidates(b"cat.png"),
        [
            "cat.png.yaml",
            "cat.png.yml",
            "cat.png.json",
            "cat.png.txt",
            "cat.yaml",
            "cat.yml",
            "cat.json",
            "cat.txt"
        ]
    );
    assert_eq!(candidates(b"my.cat.JPG")[4], "my.cat.yaml");
    assert_eq!(candidates(b"noext").len(), 4);
    assert_eq!(
        candidates(b"\xFF.png")[4],
        "\\xFF.yaml",
        "by bytes, not UTF-8 text"
    );
}

#[test]
fn fields_serialize_only_what_is_set() {
    let f = yaml("seed: 4\naspect_ratio: auto\nextra_fields: {a: 1}").unwrap();
    let json = serde_json::to_value(&f).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"seed": 4, "aspect_ratio": "auto", "extra_fields": {"a": 1}})
    );
}

fn request_err(fields: &Fields) -> String {
    match fields.to_request(&image(1024, 1024)) {
        Err(RequestError::Invalid(m)) => m,
        other => panic!("expected an invalid request, got {other:?}"),
    }
}

/// SPEC.md, the operation table: each operation takes its own fields; the sidecar naming
/// another is refused, naming the field and the operation; defaults apply only where taken.
#[test]
fn each_operation_refuses_fields_it_does_not_take() {
    let sidecar = yaml("operation: reframe\nresolution: 1280x768\nprompt: a cat\n").unwrap();
    let err = match merge_layers(vec![], Some(sidecar)) {
        Err(RequestError::Invalid(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(
        err.starts_with("prompt:") && err.contains("reframe"),
        "{err}"
    );
    let defaults = yaml("num_images: 2\naspect_ratio: auto\nprompt: house style\n").unwrap();
    let sidecar = yaml("operation: reframe\nresolution: 1280x768\n").unwrap();
    let merged = merge_layers(vec![defaults], Some(sidecar)).unwrap();
    let request = merged.to_request(&image(100, 100)).unwrap();
    assert_eq!(request.operation, Operation::Reframe);
    assert_eq!(
        request.fields,
        pairs(&[("num_images", "2"), ("resolution", "1280x768")]),
        "aspect_ratio and prompt from the defaults are not sent to reframe"
    );
}

#[test]
fn reframe_needs_a_resolution_and_no_prompt() {
    let merged = merge_layers(vec![yaml("operation: REFRAME").unwrap()], None).unwrap();
    assert!(request_err(&merged).starts_with("resolution:"));
    let inpaint = merge_layers(vec![yaml("operation: inpaint").unwrap()], None).unwrap();
    assert_eq!(
        inpaint.to_request(&image(10, 10)),
        Err(RequestError::MissingPrompt)
    );
    assert!(yaml("operation: upscale").is_err());
}

#[test]
fn reference_rules_need_no_file() {
    let both =
        yaml("prompt: p\nstyle_codes: [AAAAAAAA]\nstyle_reference_images: [_refs/a.png]").unwrap();
    assert!(request_err(&both).contains("style_codes and style_reference_images"));
    let two = yaml("prompt: p\ncharacter_reference_images: [a.png, b.png]").unwrap();
    assert!(request_err(&two).starts_with("character_reference_images: 2 images"));
    let lone_mask = yaml("prompt: p\ncharacter_reference_images_mask: m.png").unwrap();
    assert!(request_err(&lone_mask).contains("without its character_reference_images"));
    assert!(yaml("style_reference_images: /etc/passwd").is_err());
    assert!(yaml("style_reference_images: []").is_err());
}

/// A path is relative to the folder of the file naming it; `..` may climb only while it
/// stays inside the inbox.
#[test]
fn reference_paths_resolve_inside_the_inbox_only() {
    let sidecar = yaml("style_reference_images: [../_refs/a.png, ./b.png]")
        .unwrap()
        .anchor(std::path::Path::new("brand/summer"));
    let paths = sidecar.style_reference_images.clone().unwrap();
    assert_eq!(
        paths[0].resolve().unwrap(),
        std::path::Path::new("brand/_refs/a.png")
    );
    assert_eq!(
        paths[1].resolve().unwrap(),
        std::path::Path::new("brand/summer/b.png")
    );
    let out = yaml("style_reference_images: [../../../x.png]")
        .unwrap()
        .anchor(std::path::Path::new("brand/summer"));
    let err = out.style_reference_images.unwrap()[0]
        .resolve()
        .expect_err("leaves the inbox");
    assert!(err.contains("out of the inbox"), "{err}");
}

/// A stronger layer's style codes or new character reference take the weaker's conflicting
/// references away, as `style_type` does for `style_codes`.
#[test]
fn stronger_layers_replace_conflicting_references() {
    let brand = yaml(
        "style_reference_images: [_refs/a.png]\ncharacter_reference_images: [c.png]\n\
         character_reference_images_mask: [m.png]",
    )
    .unwrap();
    let sidecar = yaml("style_codes: [AAAAAAAA]\ncharacter_reference_images: [d.png]").unwrap();
    let merged = brand.overlay(sidecar);
    assert_eq!(merged.style_reference_images, None);
    assert_eq!(merged.character_reference_images_mask, None);
    assert_eq!(
        merged.character_reference_images.unwrap()[0].written,
        "d.png"
    );
}
