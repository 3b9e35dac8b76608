//! Ideogram's other image edits (issue 10): `operation:` picks the endpoint and the fields,
//! inpaint's mask `STEM.mask.*` travels with its image, `missing_mask`, the dry run of every
//! operation, and safe multipart names for hostile file names.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::asserts::{assert_nothing_lost, assert_quarantined, read_json, single_job_dir};
use crate::daemon::{Daemon, start_with_fake};
use crate::env::{TestEnv, sha256, walk_paths};
use crate::images;

/// SPEC.md, The remote API and The outbox: each operation posts to its own endpoint with its
/// own fields; outputs are `STEM-{operation}-N.EXT`; `metadata.json` records the operation and
/// the endpoint; inpaint's mask goes with the image and is listed in `request`.
#[test]
fn each_operation_runs_end_to_end() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[("defaults.num_images", "2")]);
    let cases = [
        ("remix", "prompt: a fox\n"),
        ("reframe", "operation: reframe\nresolution: 1280x800\n"),
        (
            "replace-background",
            "operation: replace-background\nprompt: a beach\n",
        ),
        (
            "inpaint",
            "operation: inpaint\nprompt: red laces\nnum_images: 1\n",
        ),
    ];
    let mask = images::png(20, 20, 801);
    env.drop_file("ops/inpaint.mask.png", &mask);
    let mut pngs = Vec::new();
    for (i, (op, yaml)) in cases.iter().enumerate() {
        env.drop_file(&format!("ops/{op}.yaml"), yaml);
        let png = images::png(20, 20, 810 + i as u64);
        env.drop_file(&format!("ops/{op}.png"), &png);
        pngs.push(png);
    }
    for ((op, _), png) in cases.iter().zip(&pngs) {
        d.wait_completed(&format!("ops/{op}.png"));
        let up = fake.only_upload_of(png);
        assert_eq!(up.operation, *op);
        let name = format!("{op}.png");
        let dir = single_job_dir(&env, &env.outbox.join("ops"), &name);
        assert!(dir.join(&name).exists(), "{name} in {}", dir.display());
        let meta = read_json(&dir.join("metadata.json"));
        assert_eq!(meta["operation"], *op);
        assert_eq!(meta["endpoint"], fake.endpoint_of(op));
        let outputs: Vec<&str> = meta["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["file"].as_str().unwrap())
            .collect();
        let n = if *op == "inpaint" { 1 } else { 2 };
        let expected: Vec<String> = (1..=n).map(|i| format!("{op}-{op}-{i}.png")).collect();
        assert_eq!(outputs, expected, "{op}");
        let mut want = vec![
            format!("{op}.png"),
            format!("{op}.yaml"),
            "metadata.json".into(),
        ];
        want.extend(expected);
        if *op == "inpaint" {
            want.push("inpaint.mask.png".into());
            assert_eq!(up.files_named("mask")[0].sha256, sha256(&mask));
            assert_eq!(meta["request"]["mask"]["file"], "ops/inpaint.mask.png");
            assert_eq!(meta["request"]["mask"]["sha256"], sha256(&mask));
        } else {
            assert!(up.files_named("mask").is_empty(), "{op} sent a mask");
        }
        want.sort();
        assert_eq!(crate::asserts::entries(&dir), want, "{op}");
    }
    let reframe = fake.only_upload_of(&pngs[1]);
    assert_eq!(reframe.field("prompt"), None, "reframe takes no prompt");
    assert_eq!(
        reframe.field("aspect_ratio"),
        None,
        "nor the default aspect_ratio"
    );
    assert_eq!(reframe.field("resolution"), Some("1280x800"));
    let background = fake.only_upload_of(&pngs[2]);
    assert_eq!(background.field("aspect_ratio"), None);
    assert_eq!(background.field("rendering_speed"), Some("DEFAULT"));
    assert_nothing_lost(&env);
    d.stop();
}

/// SPEC.md, The remote API: "anything else is refused locally as invalid_sidecar, naming the
/// field and the operation"; missing_prompt only where the operation needs a prompt.
#[test]
fn a_field_the_operation_does_not_take_is_refused() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file(
        "a.yaml",
        "operation: reframe\nresolution: 1024x1024\nprompt: no\n",
    );
    env.drop_file("a.png", images::png(20, 20, 820));
    env.drop_file(
        "b.yaml",
        "operation: replace-background\nimage_weight: 50\nprompt: p\n",
    );
    env.drop_file("b.png", images::png(20, 20, 821));
    env.drop_file("c.yaml", "operation: replace-background\n");
    env.drop_file("c.png", images::png(20, 20, 822));
    env.drop_file("d.yaml", "operation: reframe\n");
    env.drop_file("d.png", images::png(20, 20, 823));
    for (file, reason, words) in [
        ("a.png", "invalid_sidecar", ["prompt", "reframe"]),
        (
            "b.png",
            "invalid_sidecar",
            ["image_weight", "replace-background"],
        ),
        ("c.png", "missing_prompt", ["prompt", "c.png"]),
        ("d.png", "invalid_sidecar", ["resolution", "reframe"]),
    ] {
        d.wait_quarantined(file, reason);
        let q = assert_quarantined(&env, file, reason);
        let message = q.error["message"].as_str().unwrap();
        assert!(
            words.iter().all(|w| message.contains(w)),
            "{file}: {message}"
        );
    }
    assert!(fake.uploads().is_empty());
    d.stop();
}

/// SPEC.md, The inbox: "Without it the job waits watch.sidecar_wait ..., then is quarantined
/// missing_mask"; a mask dropped just after its image (within the wait) is taken.
#[test]
fn inpaint_without_its_mask_waits_then_is_missing_mask() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[("watch.sidecar_wait", "1500ms")]);
    env.drop_file("lone.yaml", "operation: inpaint\nprompt: p\n");
    env.drop_file("lone.png", images::png(20, 20, 830));
    env.drop_file("late.yaml", "operation: inpaint\nprompt: p\n");
    let late = images::png(20, 20, 831);
    env.drop_file("late.png", &late);
    d.wait_for_event("job.claimed", |e| e["file"] == "late.png");
    let mask = images::png(20, 20, 832);
    env.drop_file("late.mask.png", &mask);
    d.wait_quarantined("lone.png", "missing_mask");
    let q = assert_quarantined(&env, "lone.png", "missing_mask");
    assert!(
        q.error["message"]
            .as_str()
            .unwrap()
            .contains("lone.mask.png")
    );
    d.wait_completed("late.png");
    let up = fake.only_upload_of(&late);
    assert_eq!(up.files_named("mask")[0].sha256, sha256(&mask));
    let dir = single_job_dir(&env, &env.outbox, "late.png");
    assert!(
        dir.join("late.png").exists(),
        "late.png in {}",
        dir.display()
    );
    assert!(
        dir.join("late.mask.png").is_file(),
        "the mask moved with its job"
    );
    assert_nothing_lost(&env);
    d.stop();
}

/// SPEC.md, The inbox: the mask must have the image's width and height.
#[test]
fn a_mask_of_another_size_is_refused() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file("shoe.mask.png", images::png(10, 20, 840));
    env.drop_file("shoe.yaml", "operation: inpaint\nprompt: p\n");
    env.drop_file("shoe.png", images::png(20, 20, 841));
    d.wait_quarantined("shoe.png", "invalid_sidecar");
    let dir = single_job_dir(&env, &env.quarantine, "shoe.png");
    assert!(
        dir.join("shoe.png").exists(),
        "shoe.png in {}",
        dir.display()
    );
    let error = read_json(&dir.join("error.json"));
    assert!(
        error["message"].as_str().unwrap().contains("10x20"),
        "{error}"
    );
    assert!(
        dir.join("shoe.mask.png").is_file(),
        "the mask went with its job"
    );
    assert!(fake.uploads().is_empty());
    d.stop();
}

/// SPEC.md, Running it: the dry-run provider does every operation (copies of the input), and
/// `--once` waits for no mask that is not there.
#[test]
fn dry_run_does_every_operation_and_once_waits_for_no_mask() {
    let env = TestEnv::new();
    env.config().set("watch.sidecar_wait", "30s").write();
    for (stem, yaml) in [
        ("r", "operation: reframe\nresolution: 640x480\n"),
        ("b", "operation: replace-background\nprompt: p\n"),
        ("i", "operation: inpaint\nprompt: p\n"),
        ("n", "operation: inpaint\nprompt: p\n"),
    ] {
        env.drop_file(&format!("{stem}.yaml"), yaml);
        env.drop_file(&format!("{stem}.png"), images::png(20, 20, 850));
    }
    env.drop_file("i.mask.png", images::png(20, 20, 851));
    let started = std::time::Instant::now();
    let mut d = Daemon::start(&env, &["--once"]);
    let status = d.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{}", d.dump());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "--once waited for the mask"
    );
    for (stem, op) in [
        ("r", "reframe"),
        ("b", "replace-background"),
        ("i", "inpaint"),
    ] {
        let name = format!("{stem}.png");
        let dir = single_job_dir(&env, &env.outbox, &name);
        assert!(dir.join(&name).exists(), "{name} in {}", dir.display());
        assert!(dir.join(format!("{stem}-{op}-1.png")).is_file(), "{stem}");
        let meta = read_json(&dir.join("metadata.json"));
        assert_eq!(meta["operation"], op);
        assert_eq!(meta["endpoint"], Value::Null);
    }
    assert_quarantined(&env, "n.png", "missing_mask");
}

/// Issue 10, "Safe part names": an image named `new<LF>line.png` went to the quarantine as
/// rejected_by_api because the raw newline reached the part's header. Every part now has a
/// plain ASCII name with the right extension, whatever the file is called.
#[test]
fn hostile_file_names_reach_the_api_under_safe_part_names() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[("defaults.prompt", "p")]);
    let long = "x".repeat(250);
    let names: Vec<Vec<u8>> = vec![
        b"new\nline.png".to_vec(),
        b"say \"cheese\".png".to_vec(),
        b"a;b=c; filename=evil.png".to_vec(),
        b"\xFF\xFEraw.png".to_vec(),
        format!("{long}.png").into_bytes(),
        "été 日本.jpg".as_bytes().to_vec(),
    ];
    let mut pngs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let bytes = if name.ends_with(b".jpg") {
            images::jpeg(20, 20, 860 + i as u64)
        } else {
            images::png(20, 20, 860 + i as u64)
        };
        env.drop_file_named("odd", OsStr::from_bytes(name), &bytes);
        pngs.push(bytes);
    }
    let deadline = std::time::Instant::now() + crate::daemon::TIMEOUT;
    while d.events_named("job.completed").len() + d.events_named("job.quarantined").len()
        < names.len()
    {
        assert!(std::time::Instant::now() < deadline, "{}", d.dump());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(d.events_named("job.quarantined").is_empty(), "{}", d.dump());
    for (name, bytes) in names.iter().zip(&pngs) {
        let up = fake.only_upload_of(bytes);
        let sent = up.file_name.clone().unwrap_or_default();
        let ext = if name.ends_with(b".jpg") {
            ".jpg"
        } else {
            ".png"
        };
        assert!(
            sent.ends_with(ext)
                && sent.len() <= 68
                && sent
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_+.".contains(&b)),
            "{:?} sent as {sent:?}",
            String::from_utf8_lossy(name)
        );
    }
    let published: Vec<PathBuf> = walk_paths(&env.outbox)
        .into_iter()
        .filter(|p| p.file_name() == Some(OsStr::new("metadata.json")))
        .collect();
    assert_eq!(published.len(), names.len(), "every odd name was published");
    let raw = published
        .iter()
        .map(|p| read_json(p))
        .find(|m| m["source"]["file"] == "\\xFF\\xFEraw.png");
    assert!(raw.is_some(), "the real name stays in metadata.json");
    d.stop();
}
