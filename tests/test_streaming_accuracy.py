"""Scorer accuracy streamed over a split in batches equals the accuracy of the split read whole."""

import zlib

import numpy as np
import pandas as pd
import pytest
import torch

from diffpo import world
from diffpo.scoring.evaluation import scorer_accuracy
from diffpo.data.rated_pairs import PairStream, read_pairs
from diffpo.scoring.learned import Scorer


class PromptTinted(Scorer):
    """A prompt-dependent judge: each prompt weighs the colour channels differently."""

    name = "tinted"
    version = "test"

    def __init__(self):
        super().__init__()
        self.largest_call = 0

    def score(self, images, prompts=None, batch_size=8):
        self.largest_call = max(self.largest_call, len(images))
        return super().score(images, prompts, batch_size)

    def _score_batch(self, images, prompts):
        weights = [np.random.default_rng(zlib.crc32(p.encode())).random(3) for p in prompts]
        return torch.tensor([float((np.asarray(im, np.float64).mean(axis=(0, 1)) * w).sum())
                             for im, w in zip(images, weights)])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    summary = world.make_world(world.WorldConfig(seed=11, n_train_pairs=150, n_validation_unique=10, n_test_unique=10,
                                                 n_ood_combinations=4, n_ood_phrasings=4, train_shard_size=60,
                                                 n_corrupt_rows=2, n_invalid_label_rows=2), out)
    return out, summary


def test_streamed_accuracy_equals_in_memory(source):
    folder, _ = source
    weights = {"alignment_weight": 0.6, "aesthetic_weight": 0.4}
    whole = scorer_accuracy(read_pairs(folder, "train"), {"tinted": PromptTinted()}, weights)
    judge = PromptTinted()
    stream = PairStream(folder, "train", batch_pairs=16)
    streamed = scorer_accuracy(stream, {"tinted": judge}, weights)
    pd.testing.assert_frame_equal(streamed, whole)
    assert list(streamed["scorer"]) == ["tinted", "ground_truth"] and 0.5 < streamed["accuracy"].max() <= 1
    assert judge.largest_call == 16  # never more than one batch of images in hand
    assert stream.skipped == {"undecodable_image": 2, "invalid_label": 2}


def test_stream_yields_every_pair_once_in_order_in_bounded_batches(source):
    folder, _ = source
    whole = read_pairs(folder, "train")
    batches = list(PairStream(folder, "train", batch_pairs=16))
    assert max(len(b) for b in batches) == 16 and sum(len(b) for b in batches) == len(whole)
    assert np.array_equal(np.concatenate([b.images_0 for b in batches]), whole.images_0)
    assert [c for b in batches for c in b.captions] == whole.captions
    assert [len(b) for b in PairStream(folder, "train", batch_pairs=16, max_pairs=20)] == [16, 4]
