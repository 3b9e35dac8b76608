//! Pairing an image with what goes with it: its sidecar (`NAME.EXT.*` before `STEM.*`) and
//! its inpaint mask, both ways, by hashed lookups only; and an image's decision when one of
//! them comes, settles, changes or goes.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use tokio::time::Instant;

use super::index::KeyBuf;
use super::{EntryId, EntryType, FolderId, Intake, NameKind, Phase, classify_name};
use crate::sidecar::{mask_candidates, sidecar_candidates};

impl Intake {
    /// A sidecar or mask came, settled, changed or went: the settled images that would take
    /// it look again.
    pub(super) fn wake_images_of(&mut self, folder: FolderId, sidecar: &[u8], now: Instant) {
        for image in self.images_wanting(folder, sidecar) {
            if matches!(
                self.entry(image).phase,
                Phase::AwaitPair | Phase::AwaitSidecar | Phase::Ready
            ) {
                self.wake_image(image, now);
            }
        }
    }

    /// A settled image decides: ready with its settled sidecar, waiting for a sidecar that
    /// is still settling, or waiting out `sidecar_wait` for one that is not there.
    /// A mask still settling holds the image back too; a mask that is not there does not (only
    /// an inpaint job needs one, and the job waits for it).
    pub(super) fn wake_image(&mut self, image: EntryId, now: Instant) {
        let mask_settling = matches!(self.mask_of(image), Pairing::Settling);
        match (mask_settling, self.sidecar_of(image)) {
            (true, _) | (false, Pairing::Settling) => {
                self.set_due(image, None);
                self.set_phase(image, Phase::AwaitPair);
            }
            (false, Pairing::Settled(_)) if self.entry(image).phase == Phase::Ready => {}
            (false, Pairing::Settled(_)) => self.make_ready(image),
            (false, Pairing::None) => {
                let settled_at = self.entry(image).stable_since + self.timings.settle;
                let until = settled_at + self.timings.sidecar_wait;
                if self.once || until <= now {
                    self.make_ready(image);
                } else {
                    self.set_phase(image, Phase::AwaitSidecar);
                    self.set_due(image, Some(until));
                }
            }
        }
    }

    /// The image's sidecar, by the SPEC's order of names: `NAME.EXT.*` before `STEM.*`.
    pub(super) fn sidecar_of(&self, image: EntryId) -> Pairing {
        let candidates = sidecar_candidates(OsStr::from_bytes(self.entry(image).name()));
        self.companion_of(image, candidates, |kind| {
            matches!(kind, NameKind::Sidecar(_))
        })
    }

    /// The image's mask, `STEM.mask.*`.
    pub(super) fn mask_of(&self, image: EntryId) -> Pairing {
        let candidates = mask_candidates(OsStr::from_bytes(self.entry(image).name()));
        self.companion_of(image, candidates, |kind| kind == NameKind::Mask)
    }

    /// The first of `candidates` (names in the image's folder, in order) that is a file of a
    /// kind `fits`, not yet taken: a hashed lookup per name.
    fn companion_of(
        &self,
        image: EntryId,
        candidates: Vec<std::ffi::OsString>,
        fits: fn(NameKind) -> bool,
    ) -> Pairing {
        let folder = self.entry(image).folder();
        for candidate in candidates {
            let key = KeyBuf::new(folder, candidate.as_bytes());
            let Some(&id) = self.by_name.get(key.bytes()) else {
                continue;
            };
            let companion = self.entry(id);
            if !fits(companion.kind) || companion.snap.kind != EntryType::File {
                continue;
            }
            return match companion.phase {
                Phase::Held => Pairing::Settled(id),
                Phase::Handed(_) | Phase::Ready => continue,
                _ => Pairing::Settling,
            };
        }
        Pairing::None
    }

    /// The images in `folder` that would take mask `name` (`STEM.mask.EXT`): those of stem
    /// `STEM`, by one hashed lookup.
    pub(super) fn images_wanting_mask(&self, folder: FolderId, mask: &[u8]) -> Vec<EntryId> {
        let image_stem = &stem(mask)[..stem(mask).len().saturating_sub(b".mask".len())];
        let mut found = self
            .images_by_stem
            .get(KeyBuf::new(folder, image_stem).bytes())
            .cloned()
            .unwrap_or_default();
        found.retain(|&id| {
            mask_candidates(OsStr::from_bytes(self.entry(id).name()))
                .iter()
                .any(|c| c.as_bytes() == mask)
        });
        found
    }

    /// The images in `folder` that would take sidecar `name`: `NAME` itself (`cat.png.yaml`)
    /// or an image whose stem is `NAME` (`cat.yaml`): two hashed lookups, then a check that
    /// the image's own candidate names include this one. For a mask, see
    /// [`Intake::images_wanting_mask`].
    pub(super) fn images_wanting(&self, folder: FolderId, sidecar: &[u8]) -> Vec<EntryId> {
        if classify_name(OsStr::from_bytes(sidecar)) == NameKind::Mask {
            return self.images_wanting_mask(folder, sidecar);
        }
        let base = stem(sidecar);
        let mut found = Vec::new();
        if let Some(&id) = self.by_name.get(KeyBuf::new(folder, base).bytes()) {
            found.push(id);
        }
        if let Some(ids) = self.images_by_stem.get(KeyBuf::new(folder, base).bytes()) {
            found.extend_from_slice(ids);
        }
        found.sort_unstable();
        found.dedup();
        found.retain(|&id| {
            let image = self.entry(id);
            image.kind == NameKind::Image
                && sidecar_candidates(OsStr::from_bytes(image.name()))
                    .iter()
                    .any(|c| c.as_bytes() == sidecar)
        });
        found
    }
}

/// What an image finds beside it.
pub(super) enum Pairing {
    None,
    Settling,
    Settled(EntryId),
}

/// The name without its last extension (`cat.png` → `cat`); a name with no dot, or only a
/// leading one, is its own stem.
pub(super) fn stem(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'.') {
        Some(dot) if dot > 0 => &name[..dot],
        _ => name,
    }
}
