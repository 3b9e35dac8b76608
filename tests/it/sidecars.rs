//! Sidecars and `_defaults.yaml` as seen by the API: which file wins, how layers combine,
//! how values are written on the form, and waiting for a late sidecar.

use std::time::Duration;

use crate::asserts::{assert_nothing_lost, assert_published, assert_request_matches};
use crate::daemon::start_with_fake;
use crate::env::TestEnv;
use crate::fake_api::Upload;
use crate::images;

/// SPEC.md, The inbox: "A .txt sidecar is the prompt (UTF-8, trimmed)".
#[test]
fn txt_sidecar_is_the_trimmed_prompt() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file("fox.txt", "  a red fox in snow \n\n");
    let png = images::png(20, 20, 100);
    env.drop_file("fox.png", &png);
    d.wait_completed("fox.png");
    assert_eq!(
        fake.only_upload_of(&png).field("prompt"),
        Some("a red fox in snow")
    );
    assert_published(&env, "fox.png");
    d.stop();
}

/// SPEC.md, The inbox: a YAML sidecar is a map of the form fields; enum values in any case,
/// sent upper-case.
#[test]
fn yaml_sidecar_sets_form_fields() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file(
        "owl.yaml",
        "prompt: an owl\nnum_images: 2\nrendering_speed: quality\n",
    );
    let png = images::png(20, 20, 101);
    env.drop_file("owl.png", &png);
    d.wait_completed("owl.png");
    let up = fake.only_upload_of(&png);
    assert_eq!(
        (
            up.field("prompt"),
            up.field("num_images"),
            up.field("rendering_speed")
        ),
        (Some("an owl"), Some("2"), Some("QUALITY"))
    );
    assert_eq!(assert_published(&env, "owl.png").output_files().len(), 2);
    d.stop();
}

/// SPEC.md, The inbox: sidecars may be JSON.
#[test]
fn json_sidecar_sets_form_fields() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file(
        "cow.json",
        r#"{"prompt": "a cow", "seed": 7, "style_type": "fiction"}"#,
    );
    let png = images::png(20, 20, 102);
    env.drop_file("cow.png", &png);
    d.wait_completed("cow.png");
    let up = fake.only_upload_of(&png);
    assert_eq!(
        (up.field("prompt"), up.field("seed"), up.field("style_type")),
        (Some("a cow"), Some("7"), Some("FICTION"))
    );
    assert_published(&env, "cow.png");
    d.stop();
}

/// SPEC.md, The inbox: "Its sidecar is NAME.EXT.{yaml,yml,json,txt} or else STEM.{...}".
#[test]
fn name_ext_sidecar_beats_stem_sidecar() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file("cat.yaml", "prompt: the short form\n");
    env.drop_file("cat.png.yaml", "prompt: the long form\n");
    let png = images::png(20, 20, 103);
    env.drop_file("cat.png", &png);
    d.wait_completed("cat.png");
    assert_eq!(
        fake.only_upload_of(&png).field("prompt"),
        Some("the long form")
    );
    // assert_published checks cat.png.yaml went along and cat.yaml did not.
    let p = assert_published(&env, "cat.png");
    assert_eq!(p.meta["sidecar"]["file"], "cat.png.yaml");
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The inbox: "Order, weakest first: config defaults, _defaults.yaml from the inbox
/// root down, the sidecar. It is never moved."
#[test]
fn defaults_files_layer_from_root_down_and_stay() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(
        &env,
        &[
            ("defaults.negative_prompt", "config-neg"),
            ("defaults.rendering_speed", "TURBO"),
        ],
    );
    env.place_defaults(
        "_defaults.yaml",
        "prompt: root prompt\nnegative_prompt: root-neg\nseed: 7\n",
    );
    env.place_defaults("a/_defaults.yaml", "seed: 8\nstyle_type: FICTION\n");
    env.drop_file("a/b/x.yaml", "style_type: realistic\n");
    let img_x = images::png(20, 20, 104);
    env.drop_file("a/b/x.png", &img_x);
    env.drop_file("a/z.txt", "z prompt");
    let img_z = images::png(20, 20, 105);
    env.drop_file("a/z.png", &img_z);
    let img_y = images::png(20, 20, 106);
    env.drop_file("y.png", &img_y);
    for file in ["a/b/x.png", "a/z.png", "y.png"] {
        d.wait_completed(file);
    }
    let fields = |up: &Upload| {
        [
            "prompt",
            "negative_prompt",
            "seed",
            "style_type",
            "rendering_speed",
        ]
        .map(|k| up.field(k).map(str::to_string))
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        fields(&fake.only_upload_of(&img_x)),
        [
            s("root prompt"),
            s("root-neg"),
            s("8"),
            s("REALISTIC"),
            s("TURBO")
        ]
    );
    assert_eq!(
        fields(&fake.only_upload_of(&img_z)),
        [
            s("z prompt"),
            s("root-neg"),
            s("8"),
            s("FICTION"),
            s("TURBO")
        ]
    );
    assert_eq!(
        fields(&fake.only_upload_of(&img_y)),
        [s("root prompt"), s("root-neg"), s("7"), None, s("TURBO")]
    );
    for image in ["a/b/x.png", "a/z.png", "y.png"] {
        assert_published(&env, image);
    }
    d.stop();
    // _defaults.yaml stays in the inbox and is copied nowhere.
    assert_nothing_lost(&env);
}

/// SPEC.md, The inbox: "`extra_fields: {name: value}` passes new API fields through
/// untouched"; The outbox: `request` includes extra fields.
#[test]
fn extra_fields_pass_through_to_the_form() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file(
        "ext.yaml",
        "prompt: extras\nextra_fields:\n  future_knob: abc\n  another_knob: 3\n",
    );
    let png = images::png(20, 20, 107);
    env.drop_file("ext.png", &png);
    d.wait_completed("ext.png");
    let up = fake.only_upload_of(&png);
    assert_eq!(up.field("future_knob"), Some("abc"));
    assert_eq!(up.field("another_knob"), Some("3"));
    assert_eq!(
        up.field("extra_fields"),
        None,
        "extra_fields itself is not a form field"
    );
    let p = assert_published(&env, "ext.png");
    assert_request_matches(&p.meta, &up.fields);
    d.stop();
}

/// SPEC.md, The inbox: "YAML follows the 1.2 core schema: OFF, on, yes are strings, so
/// magic_prompt: OFF means OFF (a boolean there is read as ON/OFF too)".
#[test]
fn magic_prompt_values_follow_yaml_1_2() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    let cases = [
        ("m1", "OFF", "OFF"),
        ("m2", "on", "ON"),
        ("m3", "false", "OFF"),
        ("m4", "true", "ON"),
    ];
    let mut pngs = Vec::new();
    for (i, (stem, written, _)) in cases.iter().enumerate() {
        env.drop_file(
            &format!("{stem}.yaml"),
            format!("prompt: magic\nmagic_prompt: {written}\n"),
        );
        let png = images::png(20, 20, 108 + i as u64);
        env.drop_file(&format!("{stem}.png"), &png);
        pngs.push(png);
    }
    for ((stem, written, sent), png) in cases.iter().zip(&pngs) {
        d.wait_completed(&format!("{stem}.png"));
        assert_eq!(
            fake.only_upload_of(png).field("magic_prompt"),
            Some(*sent),
            "magic_prompt: {written}"
        );
    }
    d.stop();
}

/// SPEC.md, The inbox: "When an image settles with no sidecar beside it, remixd waits
/// watch.sidecar_wait for one (a late sidecar wins over any default)".
#[test]
fn late_sidecar_within_sidecar_wait_wins_over_defaults() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(
        &env,
        &[
            ("defaults.prompt", "the config prompt"),
            ("watch.sidecar_wait", "3s"),
        ],
    );
    let png = images::png(20, 20, 120);
    env.drop_file("late.png", &png);
    d.wait_for_event("job.detected", |e| e["file"] == "late.png");
    // Well past settle (200 ms), well inside sidecar_wait (3 s).
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        fake.uploads().is_empty(),
        "submitted before sidecar_wait ran out"
    );
    env.drop_file("late.txt", "the late prompt");
    d.wait_completed("late.png");
    assert_eq!(
        fake.only_upload_of(&png).field("prompt"),
        Some("the late prompt")
    );
    let p = assert_published(&env, "late.png");
    assert_eq!(p.meta["sidecar"]["file"], "late.txt");
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The inbox: "... then goes on with the defaults" once `watch.sidecar_wait` is over.
#[test]
fn without_sidecar_the_config_default_prompt_is_used_after_the_wait() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[("defaults.prompt", "the config prompt")]);
    let png = images::png(20, 20, 121);
    env.drop_file("lone.png", &png);
    let dropped_at = env.dropped_at("lone.png").at;
    d.wait_completed("lone.png");
    let up = fake.only_upload_of(&png);
    assert_eq!(up.field("prompt"), Some("the config prompt"));
    // settle 200 ms + sidecar_wait 400 ms, both counted from after the drop.
    let waited = up.at.duration_since(dropped_at);
    assert!(
        waited >= Duration::from_millis(600),
        "submitted after only {waited:?}"
    );
    let p = assert_published(&env, "lone.png");
    assert!(p.meta["sidecar"].is_null());
    d.stop();
}
