//! Unit tests of config loading, resolving and folder preparation.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::raw::*;
use super::resolve::*;
use super::*;
use crate::sidecar::AspectRatio;

const FOLDERS: &str = "inbox: in\noutbox: out\nquarantine: q\n";
const KEY: &[(&str, &str)] = &[("REMIXD_API_KEY", "sk-test-4242")];

/// Writes `yaml` as `remixd.yaml` in a new temp folder and loads it with `vars` as the
/// environment.
fn load_in(
    yaml: &str,
    overrides: Overrides,
    vars: &[(&str, &str)],
) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("remixd.yaml");
    fs::write(&path, yaml).unwrap();
    let vars: HashMap<String, OsString> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
        .collect();
    let result = load_with_env(&path, overrides, &move |name| vars.get(name).cloned());
    (dir, result)
}

fn load_ok(yaml: &str) -> (tempfile::TempDir, Config) {
    let (dir, result) = load_in(yaml, Overrides::default(), KEY);
    (dir, result.unwrap())
}

/// The refusal's text after `<config path>: `, checking it is one line.
fn refusal(yaml: &str) -> String {
    refusal_with(yaml, Overrides::default(), KEY)
}

fn refusal_with(yaml: &str, overrides: Overrides, vars: &[(&str, &str)]) -> String {
    let (dir, result) = load_in(yaml, overrides, vars);
    let message = result.unwrap_err().to_string();
    assert!(!message.contains('\n'), "not one line: {message}");
    let prefix = format!("{}: ", dir.path().join("remixd.yaml").display());
    message
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{message:?} does not start with the config path"))
        .to_owned()
}

#[test]
fn minimal_config_resolves_every_default() {
    let (dir, cfg) = load_ok(FOLDERS);
    let root = dir.path();
    assert_eq!(cfg.path, root.join("remixd.yaml"));
    assert_eq!(cfg.inbox, root.join("in"));
    assert_eq!(cfg.outbox, root.join("out"));
    assert_eq!(cfg.quarantine, root.join("q"));
    assert_eq!(cfg.work_dir, root.join("in/.remixd"));
    assert_eq!(cfg.api.provider, Provider::Kkiai);
    assert_eq!(cfg.api.base_url.as_deref(), Some(KKIAI_URL));
    assert_eq!(cfg.api.api_key.as_ref().unwrap().expose(), "sk-test-4242");
    assert_eq!(cfg.api.api_key_source, "$REMIXD_API_KEY");
    assert_eq!(cfg.api.request_timeout, secs(180));
    assert_eq!(cfg.api.connect_timeout, secs(10));
    let defaults = Fields {
        num_images: Some(1),
        rendering_speed: Some("DEFAULT".into()),
        aspect_ratio: Some(AspectRatio::Auto),
        ..Fields::default()
    };
    assert_eq!(cfg.defaults, defaults);
    let watch = WatchConfig {
        mode: WatchMode::Auto,
        poll_interval: secs(2),
        rescan_interval: secs(300),
        settle: secs(1),
        sidecar_wait: secs(5),
        orphan_after: secs(3600),
    };
    assert_eq!(cfg.watch, watch);
    let limits = Limits {
        max_image_bytes: 10_000_000,
        concurrency: 4,
        inflight_images: 10,
        requests_per_minute: 60,
        daily_image_budget: None,
        daily_spend_budget_usd: None,
        scope: crate::config::LimitScope::Account,
    };
    assert_eq!(cfg.limits, limits);
    assert_eq!(
        (
            cfg.retry.max_attempts,
            cfg.retry.initial_backoff,
            cfg.retry.max_backoff
        ),
        (5, secs(2), secs(300))
    );
    assert_eq!(cfg.layout, "{subdir}/{stem}-{job_id}");
    assert_eq!((cfg.gallery, cfg.gallery_delay), (true, secs(5)));
    assert_eq!(cfg.logging.format, LogFormat::Auto);
    assert_eq!(cfg.logging.level, "info");
    assert_eq!(cfg.logging.stats_interval, secs(60));
    assert_eq!(
        (cfg.shutdown_grace, cfg.umask, cfg.lease),
        (secs(30), 0o007, secs(60))
    );
}

#[test]
fn written_values_replace_defaults() {
    let (_dir, cfg) = load_ok(&format!(
        "{FOLDERS}api:\n  provider: Ideogram\n  request_timeout: 90s\nwatch:\n  mode: poll\n  \
         settle: 500ms\nlimits:\n  concurrency: 2\n  daily_image_budget: 100\nlogging:\n  \
         format: json\n  level: DEBUG\nlease: 5m\n"
    ));
    assert_eq!(cfg.api.provider, Provider::Ideogram);
    assert_eq!(cfg.api.base_url.as_deref(), Some(IDEOGRAM_URL));
    assert_eq!(cfg.api.request_timeout, secs(90));
    assert_eq!(cfg.watch.mode, WatchMode::Poll);
    assert_eq!(cfg.watch.settle, Duration::from_millis(500));
    assert_eq!(
        (cfg.limits.concurrency, cfg.limits.daily_image_budget),
        (2, Some(100))
    );
    assert_eq!(
        (cfg.logging.format, cfg.logging.level.as_str()),
        (LogFormat::Json, "debug")
    );
    assert_eq!(cfg.lease, secs(300));
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    fs::create_dir_all(etc.join("secrets")).unwrap();
    fs::write(etc.join("secrets/key"), "sk-file").unwrap();
    let absolute_out = dir.path().join("abs/out");
    let yaml = format!(
        "inbox: ../srv/in\noutbox: {}\nquarantine: ./q\nwork_dir: ../srv/in/.work\n\
         api:\n  api_key_file: secrets/key\n",
        absolute_out.display()
    );
    let path = etc.join("remixd.yaml");
    fs::write(&path, yaml).unwrap();
    let cfg = load_with_env(&path, Overrides::default(), &|_| None).unwrap();
    assert_eq!(cfg.inbox, dir.path().join("srv/in"));
    assert_eq!(cfg.outbox, absolute_out);
    assert_eq!(cfg.quarantine, etc.join("q"));
    assert_eq!(cfg.work_dir, dir.path().join("srv/in/.work"));
    assert_eq!(cfg.api.api_key.unwrap().expose(), "sk-file");
    assert_eq!(
        cfg.api.api_key_source,
        etc.join("secrets/key").display().to_string()
    );
}

#[test]
fn unknown_keys_are_named_by_their_dotted_path() {
    assert!(
        refusal(&format!("{FOLDERS}inboxx: x\n"))
            .starts_with("inboxx: unknown key (expected one of inbox, outbox, quarantine, work_dir, api, defaults, watch,"),
    );
    assert_eq!(
        refusal(&format!("{FOLDERS}watch:\n  setle: 1s\n")),
        "watch.setle: unknown key (expected one of mode, poll_interval, rescan_interval, \
         settle, sidecar_wait, orphan_after)"
    );
    assert_eq!(
        refusal(&format!("{FOLDERS}output:\n  layuot: x\n")),
        "output.layuot: unknown key (expected one of layout, gallery, gallery_delay)"
    );
}

#[test]
fn bad_durations_name_the_key_and_the_expected_form() {
    assert_eq!(
        refusal(&format!("{FOLDERS}watch:\n  settle: abc\n")),
        "watch.settle: invalid duration \"abc\" (write e.g. 500ms, 2s, 5m)"
    );
    assert_eq!(
        refusal(&format!("{FOLDERS}lease: 5\n")),
        "lease: invalid duration 5 (write e.g. 500ms, 2s, 5m)"
    );
    assert_eq!(
        refusal(&format!("{FOLDERS}watch:\n  settle: 0s\n")),
        "watch.settle: must be longer than 0s"
    );
}

#[test]
fn bad_enum_values_list_the_allowed_ones() {
    assert_eq!(
        refusal(&format!("{FOLDERS}api:\n  provider: openai\n")),
        "api.provider: unknown value \"openai\" (expected one of kkiai, ideogram, dry-run)"
    );
    assert_eq!(
        refusal(&format!("{FOLDERS}watch:\n  mode: inotify\n")),
        "watch.mode: unknown value \"inotify\" (expected one of auto, native, poll)"
    );
    assert_eq!(
        refusal(&format!("{FOLDERS}logging:\n  format: xml\n")),
        "logging.format: unknown value \"xml\" (expected one of auto, json, pretty)"
    );
}

#[test]
fn wrong_shapes_name_the_key() {
    assert_eq!(
        refusal(&format!("{FOLDERS}watch: 5\n")),
        "watch: expected a mapping of keys, found 5"
    );
    assert_eq!(
        refusal(&format!("{FOLDERS}limits:\n  concurrency: four\n")),
        "limits.concurrency: invalid type: string \"four\", expected a whole number"
    );
    // An empty section is the same as leaving it out.
    let (_dir, cfg) = load_ok(&format!("{FOLDERS}api:\nwatch:\n"));
    assert_eq!(cfg.api.provider, Provider::Kkiai);
}

#[test]
fn missing_folder_keys_are_named() {
    assert_eq!(
        refusal("outbox: out\nquarantine: q\n"),
        "inbox: missing (required)"
    );
    assert_eq!(
        refusal("inbox: in\noutbox: null\nquarantine: q\n"),
        "outbox: missing (required)"
    );
    assert_eq!(refusal(""), "inbox: missing (required)");
}

#[test]
fn yaml_syntax_errors_are_one_line_with_a_position() {
    let (_dir, result) = load_in("inbox: [in\noutbox: out\n", Overrides::default(), KEY);
    let err = result.unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("line") && !text.contains('\n'), "{text}");
    let (_dir, result) = load_in("- inbox\n- outbox\n", Overrides::default(), KEY);
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("must be a mapping of keys")
    );
}

#[test]
fn a_missing_api_key_says_where_to_put_one() {
    assert_eq!(
        refusal_with(FOLDERS, Overrides::default(), &[]),
        "api.api_key_env: no API key: set $REMIXD_API_KEY or api.api_key_file (or use --dry-run)"
    );
    assert_eq!(
        refusal_with(FOLDERS, Overrides::default(), &[("REMIXD_API_KEY", " \n")]),
        "api.api_key_env: no API key: set $REMIXD_API_KEY or api.api_key_file (or use --dry-run)"
    );
    let other_var = format!("{FOLDERS}api:\n  api_key_env: IDEOGRAM_KEY\n");
    assert!(refusal(&other_var).starts_with("api.api_key_env: no API key: set $IDEOGRAM_KEY"));
    let (_dir, result) = load_in(
        &other_var,
        Overrides::default(),
        &[("IDEOGRAM_KEY", " k2 ")],
    );
    assert_eq!(result.unwrap().api.api_key.unwrap().expose(), "k2");
}

#[test]
fn the_key_file_is_trimmed_and_wins_over_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("remixd.yaml");
    fs::write(dir.path().join("key"), "  sk-from-file \n\n").unwrap();
    fs::write(&path, format!("{FOLDERS}api:\n  api_key_file: key\n")).unwrap();
    let env = |_: &str| Some(OsString::from("sk-from-env"));
    let cfg = load_with_env(&path, Overrides::default(), &env).unwrap();
    assert_eq!(cfg.api.api_key.unwrap().expose(), "sk-from-file");

    fs::write(dir.path().join("key"), " \n").unwrap();
    let err = load_with_env(&path, Overrides::default(), &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(": api.api_key_file: ") && err.ends_with("is empty"),
        "{err}"
    );

    fs::remove_file(dir.path().join("key")).unwrap();
    let err = load_with_env(&path, Overrides::default(), &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains(": api.api_key_file: cannot read "), "{err}");

    fs::write(dir.path().join("key"), "sk-one\nsk-two\n").unwrap();
    let err = load_with_env(&path, Overrides::default(), &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("white space") && !err.contains("sk-one"),
        "{err}"
    );
}

#[test]
fn dry_run_needs_no_key_and_no_url() {
    let dry = Overrides { dry_run: true };
    let (_dir, result) = load_in(&format!("{FOLDERS}api:\n  provider: ideogram\n"), dry, &[]);
    let api = result.unwrap().api;
    assert_eq!(
        (api.provider, api.base_url, api.api_key),
        (Provider::DryRun, None, None)
    );
    let (_dir, result) = load_in(
        &format!("{FOLDERS}api:\n  provider: dry-run\n"),
        Overrides::default(),
        &[],
    );
    assert_eq!(result.unwrap().api.provider, Provider::DryRun);
    // A written base_url is still checked, so a rehearsal catches its mistakes.
    let bad_url = format!("{FOLDERS}api:\n  base_url: http://example.com\n");
    assert!(refusal_with(&bad_url, dry, &[]).starts_with("api.base_url: "));
}

#[test]
fn base_url_must_be_https_unless_loopback() {
    let cases = [
        (
            "https://proxy.example.com/ideogram/",
            Some("https://proxy.example.com/ideogram"),
        ),
        ("http://127.0.0.1:8080/", Some("http://127.0.0.1:8080")),
        ("http://127.9.9.9", Some("http://127.9.9.9")),
        ("http://[::1]:9000", Some("http://[::1]:9000")),
        ("http://LOCALHOST:9000", Some("http://LOCALHOST:9000")),
        ("http://example.com", None),
        ("http://10.0.0.1", None),
        ("ftp://example.com", None),
        ("example.com", None),
        ("https://example.com/?x=1", None),
        ("https://user:pw@example.com", None),
    ];
    for (written, expected) in cases {
        let yaml = format!("{FOLDERS}api:\n  base_url: \"{written}\"\n");
        let (_dir, result) = load_in(&yaml, Overrides::default(), KEY);
        if let Some(url) = expected {
            assert_eq!(result.unwrap().api.base_url.as_deref(), Some(url));
        } else {
            let err = result.unwrap_err().to_string();
            assert!(err.contains(": api.base_url: "), "{written}: {err}");
        }
    }
}

#[test]
fn umask_is_read_as_octal() {
    for (written, mask) in [
        ("\"0027\"", 0o027),
        ("0027", 0o027),
        ("7", 0o7),
        ("27", 0o27),
        ("\"777\"", 0o777),
    ] {
        let (_dir, cfg) = load_ok(&format!("{FOLDERS}umask: {written}\n"));
        assert_eq!(cfg.umask, mask, "{written}");
    }
    for written in ["\"1000\"", "\"0089\"", "abc", "-1", "\"\"", "\"+7\""] {
        let text = refusal(&format!("{FOLDERS}umask: {written}\n"));
        assert!(
            text.starts_with("umask: invalid umask "),
            "{written}: {text}"
        );
    }
}

#[test]
fn numbers_and_backoffs_are_range_checked() {
    let cases = [
        (
            "limits:\n  concurrency: 0\n",
            "limits.concurrency: must be at least 1",
        ),
        (
            "limits:\n  inflight_images: 0\n",
            "limits.inflight_images: must be at least 1",
        ),
        (
            "limits:\n  requests_per_minute: 0\n",
            "limits.requests_per_minute: must be at least 1",
        ),
        (
            "limits:\n  max_image_bytes: 0\n",
            "limits.max_image_bytes: must be at least 1",
        ),
        (
            "limits:\n  daily_image_budget: 0\n",
            "limits.daily_image_budget: must be at least 1 (or null for no cap)",
        ),
        (
            "retry:\n  max_attempts: 0\n",
            "retry.max_attempts: must be at least 1",
        ),
        (
            "retry:\n  initial_backoff: 10m\n",
            "retry.initial_backoff: 10m is longer than retry.max_backoff (5m)",
        ),
        (
            "watch:\n  poll_interval: 0ms\n",
            "watch.poll_interval: must be longer than 0s",
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(refusal(&format!("{FOLDERS}{yaml}")), expected);
    }
}

#[test]
fn layout_accepts_only_known_placeholders_inside_the_outbox() {
    let (_dir, cfg) = load_ok(&format!(
        "{FOLDERS}output:\n  layout: \"{{date}}/{{stem}}.{{ext}}-{{job_id}}\"\n"
    ));
    assert_eq!(cfg.layout, "{date}/{stem}.{ext}-{job_id}");
    for bad in [
        "{subdir}/{stem}-{jobid}",
        "/srv/{job_id}",
        "{subdir}/../{job_id}",
        "{job_id",
        "a}b",
        "",
    ] {
        let text = refusal(&format!("{FOLDERS}output:\n  layout: \"{bad}\"\n"));
        assert!(text.starts_with("output.layout: "), "{bad}: {text}");
    }
}

#[test]
fn logging_level_accepts_levels_and_filters_but_not_typos() {
    for (written, level) in [("WARN", "warn"), ("info,remixd=debug", "info,remixd=debug")] {
        let (_dir, cfg) = load_ok(&format!("{FOLDERS}logging:\n  level: \"{written}\"\n"));
        assert_eq!(cfg.logging.level, level);
    }
    for bad in ["verbose", "remixd=loud"] {
        let text = refusal(&format!("{FOLDERS}logging:\n  level: \"{bad}\"\n"));
        assert!(
            text.starts_with("logging.level: unknown level"),
            "{bad}: {text}"
        );
    }
}

#[test]
fn folders_that_would_feed_each_other_are_refused() {
    let text = refusal("inbox: in\noutbox: in/done\nquarantine: q\n");
    assert!(
        text.starts_with("outbox: ") && text.contains("is inside the inbox"),
        "{text}"
    );
    assert!(refusal("inbox: in\noutbox: out\nquarantine: out\n").starts_with("quarantine: "));
    assert!(refusal(&format!("{FOLDERS}work_dir: in/work\n")).starts_with("work_dir: "));
    let (_dir, cfg) = load_ok("inbox: in\noutbox: in/.done\nquarantine: q\n");
    assert!(cfg.outbox.ends_with("in/.done"));
}

#[test]
fn prepare_folders_creates_them_with_the_umask() {
    let (dir, cfg) = load_ok("inbox: a/in\noutbox: out\nquarantine: q\numask: \"0027\"\n");
    fs::create_dir(dir.path().join("q")).unwrap();
    fs::set_permissions(dir.path().join("q"), fs::Permissions::from_mode(0o700)).unwrap();
    cfg.prepare_folders().unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    for created in [
        &cfg.inbox,
        &cfg.outbox,
        &cfg.work_dir,
        &dir.path().join("a"),
    ] {
        assert_eq!(mode(created), 0o750, "{}", created.display());
    }
    assert_eq!(
        mode(&cfg.quarantine),
        0o700,
        "an existing folder keeps its mode"
    );
    // Again: everything exists now.
    cfg.prepare_folders().unwrap();
}

#[test]
fn prepare_folders_names_the_folder_it_cannot_create() {
    let (dir, cfg) = load_ok(FOLDERS);
    fs::write(dir.path().join("out"), "a file").unwrap();
    let err = cfg.prepare_folders().unwrap_err().to_string();
    assert!(
        err.contains(": outbox: ") && err.ends_with("exists but is not a folder"),
        "{err}"
    );
}

#[test]
fn prepare_folders_refuses_a_work_dir_on_another_filesystem() {
    let shm = Path::new("/dev/shm");
    let (dir, _) = load_ok(FOLDERS);
    let temp_dev = fs::metadata(dir.path()).unwrap().dev();
    let Ok(shm_meta) = fs::metadata(shm) else {
        return;
    };
    if shm_meta.dev() == temp_dev {
        return; // Nothing to test on this machine: both are one filesystem.
    }
    let work = shm.join(format!("remixd-test-{}", std::process::id()));
    let (_dir, cfg) = load_ok(&format!("{FOLDERS}work_dir: {}\n", work.display()));
    let err = cfg.prepare_folders().unwrap_err().to_string();
    assert!(
        err.contains(": work_dir: ") && err.contains("not on the inbox's filesystem"),
        "{err}"
    );
    assert!(
        !work.exists(),
        "the misplaced work area must not be created"
    );
}

#[test]
fn debug_output_never_shows_the_key() {
    let (_dir, cfg) = load_ok(FOLDERS);
    let shown = format!("{cfg:?} {cfg:#?}");
    assert!(!shown.contains("sk-test-4242"));
    assert!(shown.contains("***"));
}

#[test]
fn changed_keys_names_what_differs() {
    let (_dir, old) = load_ok(FOLDERS);
    assert!(changed_keys(&old, &old.clone()).is_empty());
    let mut new = old.clone();
    new.watch.settle = secs(3);
    new.api.api_key = Some(ApiKey::new("sk-rotated".into()));
    new.defaults.rendering_speed = Some("TURBO".into());
    new.layout = "{job_id}".into();
    new.gallery_delay = secs(1);
    assert_eq!(
        changed_keys(&old, &new),
        [
            "api.api_key",
            "defaults.rendering_speed",
            "watch.settle",
            "output.layout",
            "output.gallery_delay"
        ]
    );
}

#[test]
fn config_path_comes_from_flag_then_variable_then_default() {
    let flag = Path::new("/tmp/flag.yaml");
    let var = || Some(OsString::from("/tmp/var.yaml"));
    assert_eq!(config_path_from(Some(flag), var()), flag);
    assert_eq!(config_path_from(None, var()), Path::new("/tmp/var.yaml"));
    assert_eq!(
        config_path_from(None, Some(OsString::new())),
        Path::new(DEFAULT_CONFIG_PATH)
    );
    assert_eq!(config_path_from(None, None), Path::new(DEFAULT_CONFIG_PATH));
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml")
}

#[test]
fn the_example_config_shows_the_defaults() {
    let path = example_path();
    let text = fs::read_to_string(&path).unwrap();
    let mut example = parse(&text, &path).unwrap();
    // The remix defaults are the sidecar module's to read; the rest must match.
    example.defaults = None;
    let minimal = parse(FOLDERS, &path).unwrap();
    let dry = Overrides { dry_run: true };
    let mut from_example = resolve(example, &path, dry, &|_| None).unwrap();
    let from_minimal = resolve(minimal, &path, dry, &|_| None).unwrap();
    from_example.inbox = from_minimal.inbox.clone();
    from_example.outbox = from_minimal.outbox.clone();
    from_example.quarantine = from_minimal.quarantine.clone();
    from_example.work_dir = from_minimal.work_dir.clone();
    assert_eq!(
        changed_keys(&from_minimal, &from_example),
        Vec::<String>::new()
    );
}

#[test]

fn the_example_config_loads() {
    let cfg = load(&example_path(), Overrides { dry_run: true }).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_eq!(cfg.inbox, root.join("example/inbox"));
    assert_eq!(cfg.work_dir, root.join("example/inbox/.remixd"));
    assert_eq!(cfg.api.provider, Provider::DryRun);
    assert_eq!(cfg.defaults.num_images, Some(1));
    assert_eq!(cfg.defaults.aspect_ratio, Some(AspectRatio::Auto));
    assert_eq!(cfg.watch.settle, secs(1));
}

#[test]

fn config_defaults_lie_over_the_builtin_ones() {
    let (_dir, cfg) = load_ok(&format!(
        "{FOLDERS}defaults:\n  prompt: a watercolour\n  num_images: 2\n"
    ));
    assert_eq!(cfg.defaults.prompt.as_deref(), Some("a watercolour"));
    assert_eq!(cfg.defaults.num_images, Some(2));
    assert_eq!(cfg.defaults.rendering_speed.as_deref(), Some("DEFAULT"));
    let text = refusal(&format!("{FOLDERS}defaults:\n  num_image: 2\n"));
    assert!(text.starts_with("defaults: "), "{text}");
}

#[test]
fn load_all_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    fs::write(
        &path,
        "inbox: in\noutbox: out\nquarantine: q\nwatch:\n  setle: 1s\nlimits:\n  concurrency: 0\nretry:\n  max_attempts: x\n",
    )
    .expect("write");
    // Keys and types are checked first, all of them; values in range after that.
    let all = load_all_with_env(&path, Overrides { dry_run: true }, &|_| None)
        .expect_err("two key problems");
    let text: Vec<String> = all.iter().map(ToString::to_string).collect();
    assert_eq!(all.len(), 2, "{text:?}");
    assert!(text.iter().any(|t| t.contains("watch.setle")), "{text:?}");
    assert!(
        text.iter().any(|t| t.contains("retry.max_attempts")),
        "{text:?}"
    );
    fs::write(
        &path,
        "inbox: in\noutbox: out\nquarantine: q\nlimits:\n  concurrency: 0\nlease: 0s\napi:\n  base_url: http://example.com\n",
    )
    .expect("write");
    let all = load_all_with_env(&path, Overrides { dry_run: true }, &|_| None)
        .expect_err("three value problems");
    let text: Vec<String> = all.iter().map(ToString::to_string).collect();
    assert_eq!(all.len(), 3, "{text:?}");
    for key in ["limits.concurrency", "lease", "api.base_url"] {
        assert!(
            text.iter().any(|t| t.contains(&format!(": {key}:"))),
            "{key}: {text:?}"
        );
    }
}

/// Issue 10, "Limits by provider": `limits.max_image_bytes` defaults to the provider's own
/// limit, 10 MB (not MiB) through kkiai and 25 MB at Ideogram; a set value wins.
#[test]
fn max_image_bytes_defaults_to_the_providers_limit() {
    let (_dir, kkiai) = load_ok(FOLDERS);
    assert_eq!(kkiai.limits.max_image_bytes, 10_000_000);
    let (_dir, ideogram) = load_ok(&format!("{FOLDERS}api:\n  provider: ideogram\n"));
    assert_eq!(ideogram.limits.max_image_bytes, 25_000_000);
    let (_dir, set) = load_ok(&format!(
        "{FOLDERS}api:\n  provider: ideogram\nlimits:\n  max_image_bytes: 123\n"
    ));
    assert_eq!(set.limits.max_image_bytes, 123);
}
