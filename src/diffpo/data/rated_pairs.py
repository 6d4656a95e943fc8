"""Decoded rated pairs for the scorers: all at once (``read_pairs``) or in batches (``PairStream``).

Pick-a-Pic's validation split is 20,596 pairs: at 512 x 512 x 3 bytes per image, decoding
it whole takes about 32 GB. Stages that only need one pass over a split (scorer accuracy)
read it through ``PairStream``, which holds one batch of decoded pairs at a time; the
tiny profile's stand-in trainers, which shuffle over epochs, read it whole.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffpo.data.preparation import DataError, iter_rated_pairs
from diffpo.data.reading import fit_image


@dataclass
class Pairs:
    """Decoded preference pairs: uint8 (N, H, W, 3) images, captions, label_0 in {0, 0.5, 1}."""

    images_0: np.ndarray
    images_1: np.ndarray
    captions: list[str]
    label_0: np.ndarray
    skipped: dict = field(default_factory=dict)
    raters: str = ""  # who labelled them, e.g. "w_align=0.6, w_aes=0.4" from world.json
    resized: int = 0  # images read at another size than image_size, resized to it

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of every image."""
        return self.images_0.shape[2], self.images_0.shape[1]

    def subset(self, idx) -> "Pairs":
        idx = np.asarray(idx)
        return Pairs(self.images_0[idx], self.images_1[idx], [self.captions[i] for i in idx],
                     self.label_0[idx], dict(self.skipped), self.raters, self.resized)


class PairStream:
    """Every pair of a split with decodable images and a valid label (ties kept), ``batch_pairs`` at a time.

    Images come in several sizes in Pick-a-Pic: each is brought to ``size`` (width, height;
    by default the first image's) by ``data.fit_image`` (resize to cover, centre-crop, as
    ``image_to_tensor`` does). After a full pass, ``skipped`` counts the rows skipped by
    reason, ``resized`` the images that needed resizing and ``image_size`` is the size used.
    """

    def __init__(self, source: str | Path, split: str, batch_pairs: int, size: tuple[int, int] | None = None,
                 max_pairs: int | None = None):
        self.source, self.split, self.batch_pairs, self.max_pairs = source, split, batch_pairs, max_pairs
        self.image_size = size
        self.skipped: dict = {}
        self.resized = 0
        info = Path(source) / "world.json"
        weights = json.loads(info.read_text()).get("scorer_weights", {}) if info.is_file() else {}
        self.raters = f"w_align={weights['alignment']:g}, w_aes={weights['aesthetic']:g}" if weights else ""

    def __iter__(self):
        counts, self.resized, pairs = Counter(), 0, 0
        images_0, images_1, captions, labels = [], [], [], []
        for _, _, record, a, b in iter_rated_pairs(self.source, self.split, counts, keep_ties=True):
            self.image_size = self.image_size or a.size
            for image, images in ((a, images_0), (b, images_1)):
                if image.size != self.image_size:
                    image, self.resized = fit_image(image, *self.image_size), self.resized + 1
                images.append(np.asarray(image))
            captions.append(record["caption"])
            labels.append(record["label_0"])
            pairs += 1
            done = bool(self.max_pairs) and pairs >= self.max_pairs
            if len(captions) == self.batch_pairs or done:
                yield self._batch(images_0, images_1, captions, labels)
                images_0, images_1, captions, labels = [], [], [], []
            if done:
                break
        if captions:
            yield self._batch(images_0, images_1, captions, labels)
        self.skipped = {"undecodable_image": counts["undecodable_image"], "invalid_label": counts["invalid_label"]}
        self.skipped.update({reason: n for reason, n in sorted(counts.items())
                             if n and reason not in self.skipped and reason != "rows_in"})
        if not pairs:
            raise DataError(f"no usable pairs in {self.source} split {self.split}: {self.skipped}")

    def _batch(self, images_0, images_1, captions, labels) -> Pairs:
        return Pairs(np.stack(images_0), np.stack(images_1), list(captions), np.array(labels, dtype=np.float64),
                     raters=self.raters)


def read_pairs(source: str | Path, split: str, max_pairs: int | None = None,
               size: tuple[int, int] | None = None) -> Pairs:
    """Every pair of a split at once (``PairStream``'s pairs, concatenated); skips counted."""
    stream = PairStream(source, split, batch_pairs=1024, size=size, max_pairs=max_pairs)
    batches = list(stream)
    return Pairs(np.concatenate([b.images_0 for b in batches]), np.concatenate([b.images_1 for b in batches]),
                 [c for b in batches for c in b.captions], np.concatenate([b.label_0 for b in batches]),
                 stream.skipped, stream.raters, stream.resized)
