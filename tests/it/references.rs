//! Reference images (issue 10): style and character references named by sidecars and
//! `_defaults.yaml`, copied at claim and sent from the copy; asset folders left alone; every
//! refused case, and hostile paths refused without reading outside the inbox.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::asserts::{assert_nothing_lost, assert_published, assert_quarantined};
use crate::daemon::{TIMEOUT, start_with_fake};
use crate::env::{TestEnv, sha256, walk_paths};
use crate::fake_api::{Reply, Upload};
use crate::images;

/// Writes an asset (never a job) at `rel` in the inbox; returns its bytes.
fn asset(env: &TestEnv, rel: &str, bytes: Vec<u8>) -> Vec<u8> {
    let path = env.inbox.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    bytes
}

fn sent_hashes(upload: &Upload, field: &str) -> Vec<String> {
    upload
        .files_named(field)
        .iter()
        .map(|f| f.sha256.clone())
        .collect()
}

/// What `metadata.json`'s `request` says of one reference field.
fn listed(meta: &Value, field: &str) -> Vec<Value> {
    meta["request"][field]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// SPEC.md, The inbox: references named by a sidecar are sent as file parts; `request`
/// lists each as `{file, bytes, sha256}`; the copies are not published; the asset folder is
/// left as it was.
#[test]
fn style_references_from_a_sidecar_are_sent_and_listed() {
    let env = TestEnv::new();
    let a = asset(&env, "_refs/a.png", images::png(30, 20, 700));
    let b = asset(&env, "_refs/b.jpg", images::jpeg(20, 20, 701));
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file(
        "brand/fox.yaml",
        "prompt: a fox\nstyle_reference_images: [../_refs/a.png, ../_refs/b.jpg]\n",
    );
    let png = images::png(20, 20, 702);
    env.drop_file("brand/fox.png", &png);
    d.wait_completed("brand/fox.png");
    let up = fake.only_upload_of(&png);
    assert_eq!(
        sent_hashes(&up, "style_reference_images"),
        [sha256(&a), sha256(&b)]
    );
    let names: Vec<_> = up.files.iter().map(|f| f.file_name.clone()).collect();
    assert_eq!(
        names,
        [
            Some("fox.png".into()),
            Some("a.png".into()),
            Some("b.jpg".into())
        ],
        "safe part names with the extension of the bytes"
    );
    assert_eq!(
        up.files_named("style_reference_images")[1]
            .content_type
            .as_deref(),
        Some("image/jpeg")
    );
    let p = assert_published(&env, "brand/fox.png");
    assert_eq!(
        listed(&p.meta, "style_reference_images"),
        [
            json!({"file": "_refs/a.png", "bytes": a.len(), "sha256": sha256(&a)}),
            json!({"file": "_refs/b.jpg", "bytes": b.len(), "sha256": sha256(&b)}),
        ]
    );
    // The asset folder: untouched, and nothing of it anywhere else.
    assert_eq!(TestEnv::tree(&env.inbox.join("_refs")), ["a.png", "b.jpg"]);
    assert_eq!(std::fs::read(env.inbox.join("_refs/a.png")).unwrap(), a);
    for area in [&env.outbox, &env.quarantine] {
        for path in walk_paths(area) {
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert!(
                bytes != a && bytes != b,
                "a reference was published: {}",
                path.display()
            );
        }
    }
    assert_nothing_lost(&env);
    d.stop();
}

/// SPEC.md, The inbox: `_defaults.yaml` sets references for a whole folder (a brand's style),
/// paths relative to its own folder; asset folders are counted once at start.
#[test]
fn a_brand_folder_gets_its_style_from_defaults_yaml() {
    let env = TestEnv::new();
    let style = asset(&env, "brand-x/_refs/style.png", images::png(16, 16, 710));
    asset(&env, "_shared/other.png", images::png(8, 8, 711));
    env.place_defaults(
        "brand-x/_defaults.yaml",
        "style_reference_images: [_refs/style.png]\nrendering_speed: turbo\n",
    );
    let (fake, mut d) = start_with_fake(&env, &[]);
    let found = d.wait_for_event("watch.asset_folders", |_| true);
    assert_eq!(found["count"], 2, "{found}");
    env.drop_file("brand-x/summer/beach.txt", "a beach at noon");
    let png = images::png(24, 24, 712);
    env.drop_file("brand-x/summer/beach.png", &png);
    d.wait_completed("brand-x/summer/beach.png");
    let up = fake.only_upload_of(&png);
    assert_eq!(sent_hashes(&up, "style_reference_images"), [sha256(&style)]);
    assert_eq!(up.field("rendering_speed"), Some("TURBO"));
    let p = assert_published(&env, "brand-x/summer/beach.png");
    assert_eq!(
        listed(&p.meta, "style_reference_images")[0]["file"],
        "brand-x/_refs/style.png"
    );
    assert_eq!(
        TestEnv::tree(&env.inbox.join("brand-x/_refs")),
        ["style.png"]
    );
    assert_nothing_lost(&env);
    d.stop();
}

/// SPEC.md, The remote API: one character reference with its mask, the mask the reference's
/// size.
#[test]
fn a_character_reference_goes_with_its_mask() {
    let env = TestEnv::new();
    let portrait = asset(&env, "_refs/face.png", images::png(40, 30, 720));
    let mask = asset(&env, "_refs/face-mask.png", images::png(40, 30, 721));
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file(
        "hero.yaml",
        "prompt: the hero at sea\ncharacter_reference_images: [_refs/face.png]\n\
         character_reference_images_mask: [_refs/face-mask.png]\n",
    );
    let png = images::png(20, 20, 722);
    env.drop_file("hero.png", &png);
    d.wait_completed("hero.png");
    let up = fake.only_upload_of(&png);
    assert_eq!(
        sent_hashes(&up, "character_reference_images"),
        [sha256(&portrait)]
    );
    assert_eq!(
        sent_hashes(&up, "character_reference_images_mask"),
        [sha256(&mask)]
    );
    let p = assert_published(&env, "hero.png");
    assert_eq!(
        listed(&p.meta, "character_reference_images_mask")[0]["file"],
        "_refs/face-mask.png"
    );
    d.stop();
}

/// SPEC.md, The inbox: "At claim ... each is copied into the job, and every attempt sends
/// that copy." The reference is replaced after the first attempt; the retry sends the copy.
#[test]
fn a_reference_replaced_after_the_claim_is_sent_as_it_was() {
    let env = TestEnv::new();
    let original = asset(&env, "_refs/s.png", images::png(16, 16, 730));
    let (fake, mut d) = start_with_fake(&env, &[]);
    fake.push_reply(Reply::status(500, r#"{"error":"try again"}"#));
    env.drop_file(
        "owl.yaml",
        "prompt: an owl\nstyle_reference_images: [_refs/s.png]\n",
    );
    let png = images::png(20, 20, 731);
    env.drop_file("owl.png", &png);
    let start = Instant::now();
    while fake.uploads().is_empty() {
        assert!(start.elapsed() < TIMEOUT, "no upload\n{}", d.dump());
        std::thread::sleep(Duration::from_millis(5));
    }
    asset(&env, "_refs/s.png", images::png(16, 16, 739));
    d.wait_completed("owl.png");
    let uploads = fake.uploads_of(&sha256(&png));
    assert_eq!(uploads.len(), 2, "{uploads:#?}");
    for up in &uploads {
        assert_eq!(
            sent_hashes(up, "style_reference_images"),
            [sha256(&original)]
        );
    }
    d.stop();
}

/// SPEC.md, The inbox: "A bad reference is invalid_sidecar, naming the field and path", and
/// nothing is sent for it.
#[test]
fn each_bad_reference_is_refused_naming_field_and_path() {
    let env = TestEnv::new();
    asset(&env, "_refs/ok.png", images::png(20, 10, 740));
    asset(&env, "_refs/other.png", images::png(20, 10, 741));
    asset(&env, "_refs/wrong-size.png", images::png(10, 20, 742));
    asset(&env, "_refs/notes.png", b"not an image at all".to_vec());
    asset(&env, "_refs/big1.png", images::png(8, 8, 743));
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "missing",
            "style_reference_images: [_refs/nope.png]",
            &["style_reference_images", "_refs/nope.png"],
        ),
        (
            "notimage",
            "style_reference_images: [_refs/notes.png]",
            &["style_reference_images", "_refs/notes.png", "not a PNG"],
        ),
        (
            "twochars",
            "character_reference_images: [_refs/ok.png, _refs/other.png]",
            &["character_reference_images", "exactly one"],
        ),
        (
            "lonemask",
            "character_reference_images_mask: [_refs/ok.png]",
            &["character_reference_images_mask", "without its"],
        ),
        (
            "badmask",
            "character_reference_images: [_refs/ok.png]\ncharacter_reference_images_mask: [_refs/wrong-size.png]",
            &[
                "character_reference_images_mask",
                "_refs/wrong-size.png",
                "10x20",
            ],
        ),
        (
            "codes",
            "style_codes: [AAAAAAAA]\nstyle_reference_images: [_refs/ok.png]",
            &["style_codes", "style_reference_images"],
        ),
        (
            "reframeref",
            "operation: reframe\nresolution: 1024x1024\ncharacter_reference_images: [_refs/ok.png]",
            &["character_reference_images", "reframe"],
        ),
    ];
    let (fake, mut d) = start_with_fake(&env, &[]);
    let mut pngs = Vec::new();
    for (i, (stem, yaml, _)) in cases.iter().enumerate() {
        let prompt = if yaml.contains("reframe") {
            ""
        } else {
            "prompt: p\n"
        };
        env.drop_file(&format!("{stem}.yaml"), format!("{prompt}{yaml}\n"));
        let png = images::png(20, 20, 750 + i as u64);
        env.drop_file(&format!("{stem}.png"), &png);
        pngs.push(png);
    }
    for ((stem, _, words), png) in cases.iter().zip(&pngs) {
        let file = format!("{stem}.png");
        d.wait_quarantined(&file, "invalid_sidecar");
        let q = assert_quarantined(&env, &file, "invalid_sidecar");
        let message = q.error["message"].as_str().unwrap();
        for word in *words {
            assert!(
                message.contains(word),
                "{stem}: {word:?} not in {message:?}"
            );
        }
        assert!(fake.uploads_of(&sha256(png)).is_empty(), "{stem} was sent");
    }
    assert_nothing_lost(&env);
    d.stop();
}

/// SPEC.md, The inbox: a reference path must stay inside the inbox, with no symlink on the
/// way, and be a regular, single-linked file; 10 MB together at most. Each hostile case is
/// refused, and nothing outside the inbox is ever sent.
#[test]
fn hostile_reference_paths_are_refused_without_reading_outside_the_inbox() {
    let env = TestEnv::new();
    let outside_dir = env.root().join("outside");
    std::fs::create_dir_all(&outside_dir).unwrap();
    let secret = images::png(12, 12, 760);
    std::fs::write(outside_dir.join("secret.png"), &secret).unwrap();
    asset(&env, "_refs/real.png", images::png(12, 12, 761));
    std::os::unix::fs::symlink(
        outside_dir.join("secret.png"),
        env.inbox.join("_refs/link.png"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside_dir, env.inbox.join("_refs/up")).unwrap();
    std::fs::hard_link(
        env.inbox.join("_refs/real.png"),
        env.inbox.join("_refs/hard.png"),
    )
    .unwrap();
    let fifo = env.inbox.join("_refs/pipe.png");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let huge = env.inbox.join("_refs/huge.png");
    std::fs::write(&huge, images::png(8, 8, 762)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&huge)
        .unwrap()
        .set_len(50_000_000)
        .unwrap();
    let secret_path = outside_dir.join("secret.png").display().to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "dotdot",
            "_refs/../../outside/secret.png".into(),
            "out of the inbox",
        ),
        ("absolute", secret_path, "absolute"),
        ("symlink", "_refs/link.png".into(), "symlink"),
        ("symdir", "_refs/up/secret.png".into(), "symlink"),
        ("fifo", "_refs/pipe.png".into(), "FIFO"),
        ("hardlink", "_refs/hard.png".into(), "hard links"),
        ("huge", "_refs/huge.png".into(), "10 MB"),
    ];
    let (fake, mut d) = start_with_fake(&env, &[]);
    for (i, (stem, path, _)) in cases.iter().enumerate() {
        let yaml = format!("prompt: p\nstyle_reference_images: [\"{path}\"]\n");
        env.drop_file(&format!("{stem}.yaml"), yaml);
        env.drop_file(&format!("{stem}.png"), images::png(20, 20, 770 + i as u64));
    }
    for (stem, path, word) in &cases {
        let file = format!("{stem}.png");
        let ended = d.wait_job_end(&file);
        assert_eq!(ended["event"], "job.quarantined", "{stem}: {ended}");
        let q = assert_quarantined(&env, &file, "invalid_sidecar");
        let message = q.error["message"].as_str().unwrap();
        assert!(
            message.contains("style_reference_images") && message.contains(path.as_str()),
            "{stem}: the message names the field and path: {message}"
        );
        assert!(
            message.contains(word),
            "{stem}: {word:?} not in {message:?}"
        );
    }
    assert!(
        fake.uploads().is_empty(),
        "nothing was sent at all: {:#?}",
        fake.uploads()
    );
    d.stop();
}
