//! The deadline logic on tokio's paused clock, against an in-memory folder: the loop's way of
//! driving it (sleep until the next deadline, then advance) is reproduced by [`Drive`], which
//! also counts the wake-ups.

use std::collections::HashMap;

use super::*;
use crate::inbox::EntryType;

const MS: Duration = Duration::from_millis(1);

fn timings() -> IntakeTimings {
    IntakeTimings {
        settle: 100 * MS,
        sidecar_wait: 300 * MS,
        orphan_after: 1000 * MS,
    }
}

fn file(size: u64) -> Snapshot {
    Snapshot {
        kind: EntryType::File,
        size,
        mtime_ns: 0,
        ctime_ns: 0,
        ino: 1,
    }
}

/// The inbox as the tests change it, and the intake watching it the way the loop does:
/// every change is observed at once (native events), every deadline is slept until.
struct Drive {
    intake: Intake,
    disk: HashMap<PathBuf, Snapshot>,
    stats: usize,
    wakeups: usize,
}

impl Drive {
    fn new(once: bool) -> Self {
        Self {
            intake: Intake::new(timings(), once),
            disk: HashMap::new(),
            stats: 0,
            wakeups: 0,
        }
    }

    /// A file appears or changes (an event names it).
    fn put(&mut self, rel: &str, snap: Snapshot) -> Option<Detected> {
        self.disk.insert(rel.into(), snap);
        self.intake
            .observe(Path::new(rel), Some(snap), Instant::now())
    }

    /// A file changes without any event (a poll has not seen it; only a `stat` will).
    fn rewrite_quietly(&mut self, rel: &str, snap: Snapshot) {
        self.disk.insert(rel.into(), snap);
    }

    fn remove(&mut self, rel: &str) {
        self.disk.remove(Path::new(rel));
        self.intake.observe(Path::new(rel), None, Instant::now());
    }

    /// Sleeps until each deadline up to `until` (never on a tick), advancing at each.
    async fn run_until(&mut self, until: Instant) {
        while let Some(at) = self.intake.next_deadline() {
            if at > until {
                break;
            }
            tokio::time::sleep_until(at).await;
            self.wakeups += 1;
            let (disk, stats) = (&self.disk, &mut self.stats);
            self.intake.advance(Instant::now(), &mut |rel| {
                *stats += 1;
                disk.get(rel).copied()
            });
        }
        tokio::time::sleep_until(until).await;
    }

    fn take(&mut self, capacity: usize) -> Vec<Decision> {
        let (disk, stats) = (&self.disk, &mut self.stats);
        self.intake
            .take_ready(Instant::now(), capacity, &mut |rel| {
                *stats += 1;
                disk.get(rel).copied()
            })
    }
}

fn image_of(d: &Decision) -> (&Path, Option<&Path>) {
    match d {
        Decision::Image { image, sidecar, .. } => (image, sidecar.as_deref()),
        Decision::Stray { .. } => panic!("not an image: {d:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn image_waits_for_settle_then_sidecar_wait_and_wakes_only_at_deadlines() {
    let mut d = Drive::new(false);
    let t0 = Instant::now();
    assert!(d.put("cat.png", file(10)).is_some());
    d.run_until(t0 + 50 * MS).await;
    assert!(d.take(10).is_empty(), "not settled yet");
    d.run_until(t0 + 399 * MS).await;
    assert!(d.take(10).is_empty(), "waiting for a sidecar");
    d.run_until(t0 + 400 * MS).await;
    let ready = d.take(10);
    assert_eq!(image_of(&ready[0]), (Path::new("cat.png"), None));
    assert_eq!(d.intake.pending(), 0);
    assert_eq!(
        d.wakeups, 2,
        "one wake to settle, one when sidecar_wait is over"
    );
    assert_eq!(
        d.stats, 2,
        "one stat at the settle deadline, one at the claim"
    );
    assert_eq!(d.intake.next_deadline(), None, "nothing left to wake for");
}

#[tokio::test(start_paused = true)]
async fn a_growing_file_is_not_ready() {
    let mut d = Drive::new(true);
    let t0 = Instant::now();
    d.put("cat.png", file(10));
    d.run_until(t0 + 90 * MS).await;
    d.put("cat.png", file(20));
    d.run_until(t0 + 150 * MS).await;
    assert!(d.take(10).is_empty(), "size changed at 90ms");
    d.run_until(t0 + 190 * MS).await;
    assert_eq!(d.take(10).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_write_no_event_reported_is_caught_at_the_settle_deadline() {
    let mut d = Drive::new(true);
    let t0 = Instant::now();
    d.put("cat.png", file(10));
    d.run_until(t0 + 50 * MS).await;
    d.rewrite_quietly("cat.png", file(30));
    d.run_until(t0 + 100 * MS).await;
    assert!(
        d.take(10).is_empty(),
        "the stat at the deadline saw it grow"
    );
    d.run_until(t0 + 200 * MS).await;
    assert_eq!(d.take(10).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_file_rewritten_after_it_settled_goes_back_to_settling_at_claim() {
    let mut d = Drive::new(true);
    let t0 = Instant::now();
    d.put("cat.png", file(10));
    d.run_until(t0 + 100 * MS).await;
    assert!(d.intake.has_ready());
    let stats_when_ready = d.stats;
    // Settled and waiting for a slot: nothing looks at it, however long it waits.
    d.run_until(t0 + 10_000 * MS).await;
    assert_eq!(
        d.stats, stats_when_ready,
        "a settled file is not stat'ed while it waits"
    );
    d.rewrite_quietly("cat.png", Snapshot { ino: 2, ..file(10) });
    assert!(
        d.take(10).is_empty(),
        "replaced after it settled: settles again"
    );
    assert_eq!(d.intake.pending(), 1);
    d.run_until(t0 + 10_100 * MS).await;
    assert_eq!(d.take(10).len(), 1, "taken in its new form");
}

#[tokio::test(start_paused = true)]
async fn late_sidecar_is_taken_with_its_image() {
    let mut d = Drive::new(false);
    let t0 = Instant::now();
    d.put("a/cat.png", file(10));
    d.run_until(t0 + 200 * MS).await;
    assert!(
        d.put("a/cat.yaml", file(5)).is_none(),
        "a sidecar is no job"
    );
    d.run_until(t0 + 250 * MS).await;
    assert!(d.take(10).is_empty(), "sidecar not settled");
    d.run_until(t0 + 300 * MS).await;
    let ready = d.take(10);
    assert_eq!(
        image_of(&ready[0]),
        (Path::new("a/cat.png"), Some(Path::new("a/cat.yaml")))
    );
    assert_eq!(d.intake.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_sidecar_that_goes_away_lets_its_image_go_on_without_it() {
    let mut d = Drive::new(false);
    let t0 = Instant::now();
    d.put("cat.png", file(10));
    d.put("cat.txt", file(5));
    d.run_until(t0 + 100 * MS).await;
    d.put("cat.txt", file(6));
    d.run_until(t0 + 150 * MS).await;
    d.remove("cat.txt");
    d.run_until(t0 + 399 * MS).await;
    assert!(d.take(10).is_empty(), "what is left of sidecar_wait");
    d.run_until(t0 + 400 * MS).await;
    assert_eq!(image_of(&d.take(10)[0]), (Path::new("cat.png"), None));
}

#[tokio::test(start_paused = true)]
async fn full_name_sidecar_beats_stem_sidecar() {
    let mut d = Drive::new(true);
    let t0 = Instant::now();
    d.put("cat.png", file(10));
    d.put("cat.yaml", file(5));
    d.put("cat.png.txt", file(5));
    d.run_until(t0 + 150 * MS).await;
    let ready = d.take(10);
    assert_eq!(ready.len(), 1);
    assert_eq!(image_of(&ready[0]).1, Some(Path::new("cat.png.txt")));
}

#[tokio::test(start_paused = true)]
async fn orphan_sidecar_is_quarantined_after_orphan_after_but_left_in_once_mode() {
    let t0 = Instant::now();
    let mut daemon = Drive::new(false);
    daemon.put("dog.yaml", file(5));
    daemon.put("cat.YAML", file(5));
    daemon.run_until(t0 + 500 * MS).await;
    assert!(daemon.take(10).is_empty());
    assert_eq!(
        daemon.intake.pending(),
        0,
        "a sidecar is no job of its own yet"
    );
    daemon.put("cat.png", file(5));
    daemon.run_until(t0 + 1000 * MS).await;
    let mut reasons: Vec<(PathBuf, Reason)> = daemon
        .take(10)
        .into_iter()
        .filter_map(|d| match d {
            Decision::Stray { path, reason, .. } => Some((path, reason)),
            Decision::Image { .. } => None,
        })
        .collect();
    reasons.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        reasons,
        vec![
            ("cat.YAML".into(), Reason::OrphanSidecar),
            ("dog.yaml".into(), Reason::OrphanSidecar)
        ],
        "sidecar names are matched exactly, so cat.YAML is no sidecar of cat.png"
    );

    let mut once = Drive::new(true);
    once.put("dog.yaml", file(5));
    once.run_until(t0 + 5000 * MS).await;
    assert!(once.take(10).is_empty());
    assert_eq!(
        once.intake.pending(),
        0,
        "--once waits for no missing image"
    );
    assert_eq!(once.intake.next_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn a_sidecar_taken_by_an_image_is_no_orphan() {
    let t0 = Instant::now();
    let mut d = Drive::new(false);
    d.put("dog.yaml", file(5));
    d.run_until(t0 + 900 * MS).await;
    d.put("dog.webp", file(5));
    d.run_until(t0 + 1000 * MS).await;
    let ready = d.take(10);
    assert_eq!(ready.len(), 1);
    assert_eq!(
        image_of(&ready[0]),
        (Path::new("dog.webp"), Some(Path::new("dog.yaml")))
    );
}

#[tokio::test(start_paused = true)]
async fn specials_and_unknown_files_become_strays() {
    let mut d = Drive::new(false);
    let t0 = Instant::now();
    let special = Snapshot {
        kind: EntryType::Special,
        ..file(0)
    };
    d.put("link.png", special);
    d.put("notes.pdf", file(3));
    assert!(d.put("_defaults.yaml", file(3)).is_none());
    d.run_until(t0 + 150 * MS).await;
    let mut reasons: Vec<_> = d
        .take(10)
        .into_iter()
        .map(|d| match d {
            Decision::Stray { reason, .. } => reason,
            Decision::Image { .. } => panic!("not an image"),
        })
        .collect();
    reasons.sort_by_key(|r| r.name());
    assert_eq!(
        reasons,
        vec![Reason::NotRegularFile, Reason::UnsupportedFormat]
    );
    assert_eq!(d.intake.tracked(), 2, "_defaults.yaml is never tracked");
}

#[tokio::test(start_paused = true)]
async fn a_handed_over_entry_is_not_detected_again_before_its_claim() {
    let mut d = Drive::new(true);
    let t0 = Instant::now();
    d.put("cat.png", file(1));
    d.run_until(t0 + 150 * MS).await;
    assert_eq!(d.take(1).len(), 1);
    assert!(
        d.put("cat.png", file(1)).is_none(),
        "a scan before the claim's rename"
    );
    assert_eq!(d.intake.pending(), 0);
    d.remove("cat.png");
    assert!(
        d.put("cat.png", file(1)).is_some(),
        "a new file of that name is new"
    );
}

#[tokio::test(start_paused = true)]
async fn capacity_limits_how_many_are_handed_over() {
    let mut d = Drive::new(true);
    let t0 = Instant::now();
    for i in 0..5 {
        d.put(&format!("{i}.png"), file(1));
    }
    d.run_until(t0 + 150 * MS).await;
    assert_eq!(d.take(2).len(), 2);
    assert_eq!(d.intake.pending(), 3);
    assert_eq!(d.take(10).len(), 3);
    assert_eq!(d.intake.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_sweep_forgets_what_a_scan_no_longer_lists() {
    let mut d = Drive::new(false);
    let t0 = Instant::now();
    d.put("a/one.png", file(1));
    d.put("b/two.png", file(1));
    d.put("b/three.png", file(1));
    d.intake.sweep(&[], t0);
    assert!(d.intake.touch(Path::new("a/one.png")));
    assert!(!d.intake.touch(Path::new("a/new.png")));
    // b/ could not be read this time: its entries are not known to be gone.
    d.intake.sweep(&[PathBuf::from("b")], t0);
    assert_eq!(d.intake.tracked(), 3);
    assert!(d.intake.touch(Path::new("a/one.png")));
    d.intake.sweep(&[], t0);
    assert_eq!(d.intake.tracked(), 1);
    assert_eq!(d.intake.pending(), 1);
}

/// A backlog costs nothing while it waits: 20,000 settled images waiting for job slots
/// leave no deadline behind, so the loop sleeps until an event or a periodic timer.
#[tokio::test(start_paused = true)]
async fn a_settled_backlog_leaves_nothing_to_wake_for() {
    let mut d = Drive::new(true);
    let t0 = Instant::now();
    for i in 0..20_000 {
        d.put(&format!("d{}/img{i}.png", i % 10), file(1));
        d.put(&format!("d{}/img{i}.txt", i % 10), file(1));
    }
    d.run_until(t0 + 100 * MS).await;
    assert_eq!(d.wakeups, 1, "all settled at one deadline");
    assert_eq!(d.intake.pending(), 20_000);
    assert_eq!(d.intake.next_deadline(), None);
    let stats = d.stats;
    d.run_until(t0 + 3_600_000 * MS).await;
    assert_eq!(
        (d.wakeups, d.stats),
        (1, stats),
        "an hour of waiting cost nothing"
    );
    let first = d.take(4);
    assert_eq!(first.len(), 4);
    assert!(first.iter().all(|x| image_of(x).1.is_some()));
    assert_eq!(
        d.stats,
        stats + 8,
        "the claim re-checks each image and its sidecar once"
    );
}

fn mask_of(d: &Decision) -> Option<&Path> {
    match d {
        Decision::Image { mask, .. } => mask.as_deref(),
        Decision::Stray { .. } => panic!("not an image: {d:?}"),
    }
}

/// SPEC.md, The inbox: the inpaint mask `STEM.mask.*` is "claimed and moved with" its image
/// and "never a job itself".
#[tokio::test(start_paused = true)]
async fn a_mask_goes_with_its_image_and_is_never_a_job() {
    let mut d = Drive::new(false);
    let t0 = Instant::now();
    assert!(
        d.put("a/cat.mask.png", file(5)).is_none(),
        "a mask is not detected as a job"
    );
    d.put("a/cat.yaml", file(3));
    assert!(d.put("a/cat.png", file(10)).is_some());
    assert_eq!(d.intake.pending(), 1, "only the image will become a job");
    d.run_until(t0 + 100 * MS).await;
    let ready = d.take(10);
    assert_eq!(ready.len(), 1, "{ready:?}");
    assert_eq!(
        image_of(&ready[0]),
        (Path::new("a/cat.png"), Some(Path::new("a/cat.yaml")))
    );
    assert_eq!(mask_of(&ready[0]), Some(Path::new("a/cat.mask.png")));
    d.run_until(t0 + 5000 * MS).await;
    assert!(
        d.take(10).is_empty(),
        "the mask was handed with its image, never an orphan"
    );
}

#[tokio::test(start_paused = true)]
async fn an_image_waits_for_a_mask_still_being_written() {
    let mut d = Drive::new(false);
    let t0 = Instant::now();
    d.put("dog.png", file(10));
    d.put("dog.txt", file(3));
    d.run_until(t0 + 60 * MS).await;
    d.put("dog.MASK.webp", file(1));
    d.run_until(t0 + 120 * MS).await;
    assert!(
        d.take(10).is_empty(),
        "the image and its sidecar settled, but the mask has not"
    );
    d.run_until(t0 + 160 * MS).await;
    let ready = d.take(10);
    assert_eq!(mask_of(&ready[0]), Some(Path::new("dog.MASK.webp")));
}

#[tokio::test(start_paused = true)]
async fn an_image_without_a_mask_does_not_wait_for_one() {
    let mut d = Drive::new(false);
    let t0 = Instant::now();
    d.put("owl.png", file(10));
    d.put("owl.yaml", file(3));
    d.run_until(t0 + 100 * MS).await;
    let ready = d.take(10);
    assert_eq!(ready.len(), 1, "ready at settle, as before masks existed");
    assert_eq!(mask_of(&ready[0]), None);
}

/// A mask whose image never comes ends like a lone sidecar, at `orphan_after`; a mask of
/// another image (`cat.mask.png` beside `dog.png`) is not taken by it.
#[tokio::test(start_paused = true)]
async fn a_lone_mask_is_an_orphan_at_orphan_after() {
    let mut d = Drive::new(false);
    let t0 = Instant::now();
    d.put("cat.mask.jpg", file(5));
    d.put("dog.png", file(10));
    d.run_until(t0 + 400 * MS).await;
    let ready = d.take(10);
    assert_eq!(ready.len(), 1);
    assert_eq!(mask_of(&ready[0]), None, "not dog's mask");
    d.run_until(t0 + 999 * MS).await;
    assert!(d.take(10).is_empty());
    d.run_until(t0 + 1000 * MS).await;
    match &d.take(10)[..] {
        [Decision::Stray { path, reason, .. }] => {
            assert_eq!(
                (path.as_path(), *reason),
                (Path::new("cat.mask.jpg"), Reason::OrphanSidecar)
            );
        }
        other => panic!("expected the orphan mask, got {other:?}"),
    }
}

/// Under `--once` nothing waits for a file that is not there, and a lone mask is left alone.
#[tokio::test(start_paused = true)]
async fn once_leaves_a_lone_mask_alone() {
    let mut d = Drive::new(true);
    let t0 = Instant::now();
    d.put("cat.mask.png", file(5));
    d.run_until(t0 + 10_000 * MS).await;
    assert!(d.take(10).is_empty());
    assert_eq!(d.intake.pending(), 0);
}
