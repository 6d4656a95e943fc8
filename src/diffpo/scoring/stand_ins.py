"""Tiny-profile stand-ins for the four learned reward models, trained in the pipeline.

The paper profile evaluates with PickScore, HPSv2, ImageReward and the LAION aesthetic
predictor (``diffpo.scoring.learned``). The tiny profile has no such checkpoints, so each one is
replaced by a small model of the same family trained on the world's data the way the real
one was trained, starting from the contrastive CLIP the pipeline pre-trains:

- pickscore: the CLIP fine-tuned with PickScore's objective (Kirstain et al. 2023) on the
  world's own preference labels: logits = logit_scale.exp() * cos(text, image_k) over the
  pair's 2 images, cross-entropy against (label_0, label_1), ties kept as (0.5, 0.5).
- hpsv2: the same loop on the same pairs re-labelled by a different rater pool.
- imagereward: the CLIP towers, fused features [image, text, image * text] into an MLP
  head shaped like ImageReward's, pairwise loss -log sigmoid(r_w - r_l) on labels from an
  alignment-heavy rater pool (ties dropped); outputs standardised by the training images'
  reward mean / std, as ImageReward's (r - mean) / std.
- aesthetic: the LAION head pattern (scaled down) on the frozen CLIP's L2-normalised image
  embeddings, MSE against 1-10 "ratings" = world.aesthetic_score + rater noise.

Each stand-in is a ``diffpo.scoring.learned.Scorer`` with the real scorer's ``name``, so tables put
them in the same columns; ``version`` says it is the tiny stand-in and which raters.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from diffpo import world
from diffpo.data.preparation import image_to_tensor
from diffpo.files import atomic_dir
from diffpo.models.loading import MissingWeightsError, save_tokenizer
from diffpo.data.rated_pairs import Pairs, read_pairs  # noqa: F401  (re-exported)
from diffpo.scoring.learned import Scorer

NAMES = ("pickscore", "hpsv2", "imagereward", "aesthetic")


# ---------------------------------------------------------------- raters and data
@dataclass
class RaterPool:
    """A population of hidden raters: u = w_align * alignment + w_aes * aesthetic, Bradley-Terry."""

    alignment_weight: float
    aesthetic_weight: float
    temperature: float = 0.08
    tie_fraction: float = 0.10
    seed: int = 0

    def describe(self) -> str:
        return f"w_align={self.alignment_weight:g}, w_aes={self.aesthetic_weight:g}, T={self.temperature:g}"


# The rater pools whose labels train the hpsv2 and imagereward stand-ins (cfg["rater"] overrides).
DEFAULT_POOLS = {
    "hpsv2": RaterPool(alignment_weight=0.45, aesthetic_weight=0.55, temperature=0.08, tie_fraction=0.10, seed=101),
    "imagereward": RaterPool(alignment_weight=0.85, aesthetic_weight=0.15, temperature=0.08, tie_fraction=0.10, seed=202),
}
AESTHETIC_NOISE = 0.05  # rater noise on the [0, 1] aesthetic score before scaling to 1-10


def relabel_pairs(images_0: np.ndarray, images_1: np.ndarray, captions: list[str],
                  pool: RaterPool) -> tuple[np.ndarray, np.ndarray]:
    """(label_0, label_1) from another rater pool, on the world's pixel scorers."""
    both = np.concatenate([images_0, images_1])
    utility = (pool.alignment_weight * world.alignment_score(both, list(captions) * 2)
               + pool.aesthetic_weight * world.aesthetic_score(both))
    n = len(captions)
    label_0, _ = world.rate_pairs(utility[:n], utility[n:], pool.temperature, pool.tie_fraction,
                                  np.random.default_rng(pool.seed))
    return label_0, 1 - label_0


def aesthetic_ratings(images: np.ndarray, seed: int, noise: float = AESTHETIC_NOISE) -> np.ndarray:
    """AVA-like 1-10 ratings: 1 + 9 * (world.aesthetic_score + N(0, noise)), clipped to [1, 10]."""
    score = world.aesthetic_score(images) + np.random.default_rng(seed).normal(0, noise, len(images))
    return np.clip(1 + 9 * score, 1, 10)


def rater_pool(name: str, cfg: dict) -> RaterPool:
    return RaterPool(**cfg["rater"]) if cfg.get("rater") else DEFAULT_POOLS[name]


def stand_in_labels(name: str, pairs: Pairs, cfg: dict, seed_offset: int = 0) -> np.ndarray:
    """label_0 from the raters each stand-in learns from (aesthetic: order of the noisy ratings)."""
    if name == "pickscore":
        return pairs.label_0
    if name == "aesthetic":
        seed = cfg.get("seed", 0) + seed_offset
        r0, r1 = aesthetic_ratings(pairs.images_0, seed), aesthetic_ratings(pairs.images_1, seed + 1)
        return np.where(r0 > r1, 1.0, np.where(r0 < r1, 0.0, 0.5))
    pool = rater_pool(name, cfg)
    return relabel_pairs(pairs.images_0, pairs.images_1, pairs.captions,
                         dataclasses.replace(pool, seed=pool.seed + seed_offset))[0]


# ---------------------------------------------------------------- the scorer
def small_reward_mlp(input_size: int, widths=(128, 32, 16, 8)) -> nn.Sequential:
    """``diffpo.scoring.learned.reward_mlp``'s layer pattern (1024, 128, 64, 16 there), scaled down."""
    a, b, c, d = widths
    return nn.Sequential(
        nn.Linear(input_size, a), nn.Dropout(0.2), nn.Linear(a, b), nn.Dropout(0.2),
        nn.Linear(b, c), nn.Dropout(0.1), nn.Linear(c, d), nn.Linear(d, 1),
    )


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) to CHW in [-1, 1], as the contrastive CLIP was pre-trained."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


SCALES = {
    "pickscore": "logit_scale.exp() * cosine(text_emb, image_emb)",
    "hpsv2": "100 * cosine(image_emb, text_emb)",
    "imagereward": "(mlp([img, txt, img*txt]) - mean) / std, standardised over the training images",
    "aesthetic": "mlp(L2-normalised CLIP image embedding), ~1-10 rating scale (prompt ignored)",
}


class StandInScorer(Scorer):
    """A tiny stand-in reward model: a CLIPModel, its tokenizer and (imagereward, aesthetic) a head."""

    def __init__(self, name: str, clip: CLIPModel, tokenizer: CLIPTokenizer, head: nn.Module | None = None,
                 version: str = "", mean: float = 0.0, std: float = 1.0, device="cpu"):
        super().__init__(device)
        self.name, self.version, self.scale = name, version, SCALES[name] + " (tiny stand-in)"
        self.uses_prompts = name != "aesthetic"
        self.clip, self.tokenizer, self.head, self.mean, self.std = clip, tokenizer, head, mean, std
        self.image_size = clip.config.vision_config.image_size
        self.to(device)

    def modules(self):
        return [self.clip] + ([self.head] if self.head is not None else [])

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        # As in pre-training: padded to the context length, no attention mask (CLIP's causal mask
        # keeps padding after the pooled end-of-text token from mattering).
        return self.tokenizer(list(prompts), padding="max_length", truncation=True, return_tensors="pt",
                              max_length=self.clip.config.text_config.max_position_embeddings)["input_ids"]

    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.get_image_features(pixel_values=pixels.to(self.device)).pooler_output, dim=-1)

    def text_embeds(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.get_text_features(input_ids=ids.to(self.device)).pooler_output, dim=-1)

    def raw_reward(self, pixels: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        """The unstandardised reward (differentiable; used by training and scoring alike)."""
        image = self.image_embeds(pixels)
        if self.name == "aesthetic":
            return self.head(image).squeeze(-1)
        text = self.text_embeds(ids)
        if self.name == "imagereward":
            return self.head(torch.cat([image, text, image * text], dim=-1)).squeeze(-1)
        scale = self.clip.logit_scale.exp() if self.name == "pickscore" else 100.0
        return scale * (image * text).sum(-1)

    def _score_batch(self, images, prompts):
        pixels = torch.from_numpy(np.stack([image_to_tensor(im, self.image_size) for im in images]))
        ids = self.tokenize(prompts) if self.uses_prompts else None
        return (self.raw_reward(pixels, ids) - self.mean) / self.std


# ---------------------------------------------------------------- objectives
def pickscore_loss(logits: torch.Tensor, label_0: torch.Tensor) -> torch.Tensor:
    """PickScore: cross-entropy of softmax over the pair's 2 logits (B, 2) against (label_0, 1 - label_0)."""
    target = torch.stack([label_0, 1 - label_0], dim=1).to(logits.dtype)
    return F.cross_entropy(logits, target)


def pairwise_loss(r_0: torch.Tensor, r_1: torch.Tensor, label_0: torch.Tensor) -> torch.Tensor:
    """ImageReward: -log sigmoid(r_w - r_l) over ordered pairs (label_0 in {0, 1})."""
    return -F.logsigmoid(torch.where(label_0 == 1, r_0 - r_1, r_1 - r_0)).mean()


# ---------------------------------------------------------------- training
def load_clip(clip_dir: str | Path, tokenizer_dir: str | Path) -> tuple[CLIPModel, CLIPTokenizer]:
    for path in (clip_dir, tokenizer_dir):
        if not Path(path).is_dir():
            raise MissingWeightsError(f"{path} does not exist: run the pretrain stage first (results/base/text)")
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    if len(tokenizer) <= 2:
        raise MissingWeightsError(f"{tokenizer_dir} holds no tokenizer (only {len(tokenizer)} tokens)")
    return CLIPModel.from_pretrained(str(clip_dir)).float(), tokenizer


def _version(name: str, pairs: Pairs, cfg: dict) -> str:
    if name == "pickscore":
        raters = f"the world's raters {pairs.raters}".strip()
    elif name == "aesthetic":
        raters = f"aesthetic ratings 1-10 (world aesthetic_score + N(0, {AESTHETIC_NOISE:g}))"
    else:
        raters = f"world raters {rater_pool(name, cfg).describe()}"
    return f"tiny stand-in, trained on {raters}, {cfg['steps']} steps"


def _optimizer(scorer: StandInScorer, cfg: dict, train_clip: bool = True) -> torch.optim.Optimizer:
    """AdamW; the head (if any) at cfg["head_learning_rate"] (default: learning_rate)."""
    groups = [{"params": list(scorer.clip.parameters())}] if train_clip else []
    if scorer.head is not None:
        groups.append({"params": list(scorer.head.parameters()),
                       "lr": cfg.get("head_learning_rate", cfg["learning_rate"])})
    return torch.optim.AdamW(groups, lr=cfg["learning_rate"], weight_decay=cfg.get("weight_decay", 0.01))


def _fit_preference(scorer: StandInScorer, pairs: Pairs, label_0: np.ndarray, cfg: dict) -> list[float]:
    """pickscore / hpsv2 (PickScore loss, ties kept) and imagereward (pairwise loss, ties dropped)."""
    keep = np.flatnonzero(label_0 != 0.5) if scorer.name == "imagereward" else np.arange(len(pairs))
    ids = scorer.tokenize(pairs.captions)
    labels = torch.from_numpy(label_0).float()
    optimizer = _optimizer(scorer, cfg)
    rng, log = np.random.default_rng(cfg.get("seed", 0)), []
    for module in scorer.modules():
        module.train()
    for _ in range(cfg["steps"]):
        idx = rng.choice(keep, min(cfg["batch_size"], len(keep)), replace=False)
        pixels = to_pixels(np.concatenate([pairs.images_0[idx], pairs.images_1[idx]]))
        if scorer.name == "imagereward":
            r = scorer.raw_reward(pixels, torch.cat([ids[idx], ids[idx]])).view(2, -1)
            loss = pairwise_loss(r[0], r[1], labels[idx])
        else:
            image, text = scorer.image_embeds(pixels).view(2, len(idx), -1), scorer.text_embeds(ids[idx])
            logits = scorer.clip.logit_scale.exp() * (image * text).sum(-1).t()
            loss = pickscore_loss(logits, labels[idx])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        log.append(loss.item())
    return log


def _fit_aesthetic(scorer: StandInScorer, pairs: Pairs, cfg: dict) -> list[float]:
    """LAION: CLIP frozen, embeddings computed once, the head regressed on ratings with MSE."""
    images = np.concatenate([pairs.images_0, pairs.images_1])
    ratings = torch.from_numpy(np.concatenate([aesthetic_ratings(pairs.images_0, cfg.get("seed", 0)),
                                               aesthetic_ratings(pairs.images_1, cfg.get("seed", 0) + 1)])).float()
    scorer.clip.eval().requires_grad_(False)
    with torch.no_grad():
        embeds = torch.cat([scorer.image_embeds(to_pixels(images[i:i + 512])) for i in range(0, len(images), 512)])
    optimizer = _optimizer(scorer, cfg, train_clip=False)
    rng, log = np.random.default_rng(cfg.get("seed", 0)), []
    scorer.head.train()
    for _ in range(cfg["steps"]):
        idx = torch.from_numpy(rng.choice(len(images), min(cfg["batch_size"], len(images)), replace=False))
        loss = F.mse_loss(scorer.head(embeds[idx]).squeeze(-1), ratings[idx])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        log.append(loss.item())
    scorer.clip.requires_grad_(True)
    return log


@torch.no_grad()
def _standardise(scorer: StandInScorer, pairs: Pairs, cfg: dict) -> None:
    """ImageReward's (r - mean) / std with mean / std over (up to norm_images of) the training images."""
    images = np.concatenate([pairs.images_0, pairs.images_1])
    captions = np.array(pairs.captions * 2, dtype=object)
    rng = np.random.default_rng(cfg.get("seed", 0))
    idx = np.sort(rng.choice(len(images), min(len(images), cfg.get("norm_images", 2048)), replace=False))
    for module in scorer.modules():
        module.eval()
    r = torch.cat([scorer.raw_reward(to_pixels(images[idx[i:i + 512]]), scorer.tokenize(captions[idx[i:i + 512]]))
                   for i in range(0, len(idx), 512)])
    scorer.mean, scorer.std = float(r.mean()), float(r.std())


def fit_stand_in(name: str, pairs: Pairs, clip_dir, tokenizer_dir, cfg: dict) -> tuple[StandInScorer, dict]:
    """Train one stand-in in memory: (scorer, summary without held-out numbers)."""
    if name not in NAMES:
        raise ValueError(f"unknown stand-in {name!r}; known: {', '.join(NAMES)}")
    torch.manual_seed(cfg.get("seed", 0))
    clip, tokenizer = load_clip(clip_dir, tokenizer_dir)
    dim = clip.config.projection_dim
    widths = tuple(cfg.get("head_widths", (128, 32, 16, 8)))
    head = {"imagereward": small_reward_mlp(3 * dim, widths), "aesthetic": small_reward_mlp(dim, widths)}.get(name)
    scorer = StandInScorer(name, clip, tokenizer, head, version=_version(name, pairs, cfg))
    if name == "aesthetic":
        log = _fit_aesthetic(scorer, pairs, cfg)
    else:
        label_0 = stand_in_labels(name, pairs, cfg)
        log = _fit_preference(scorer, pairs, label_0, cfg)
    if name == "imagereward":
        _standardise(scorer, pairs, cfg)
    summary = {
        "name": name, "version": scorer.version, "scale": scorer.scale,
        "steps": cfg["steps"], "batch_size": cfg["batch_size"], "learning_rate": cfg["learning_rate"],
        "seed": cfg.get("seed", 0), "train_pairs": len(pairs), "skipped": pairs.skipped,
        "head_widths": list(widths) if head is not None else None, "mean": scorer.mean, "std": scorer.std,
        "final_loss": float(np.mean(log[-20:])),
    }
    return scorer, summary


def save_stand_in(scorer: StandInScorer, summary: dict, out_dir: str | Path) -> None:
    """Write clip/ (CLIPModel), tokenizer/, head.safetensors (if any) and scorer.json, atomically."""
    with atomic_dir(out_dir) as tmp:
        scorer.clip.save_pretrained(tmp / "clip")
        save_tokenizer(scorer.tokenizer, tmp / "tokenizer")
        if scorer.head is not None:
            save_file({k: v.contiguous() for k, v in scorer.head.state_dict().items()}, tmp / "head.safetensors")
        (tmp / "scorer.json").write_text(json.dumps(summary, indent=2) + "\n")


def load_stand_in(folder: str | Path, device="cpu") -> StandInScorer:
    """The evaluation-time loader of a folder written by ``train_stand_in``."""
    folder = Path(folder)
    if not (folder / "scorer.json").is_file():
        raise MissingWeightsError(f"{folder} holds no stand-in scorer (no scorer.json): run train_stand_in first")
    meta = json.loads((folder / "scorer.json").read_text())
    clip, tokenizer = load_clip(folder / "clip", folder / "tokenizer")
    head = None
    if meta.get("head_widths"):
        inputs = clip.config.projection_dim * (3 if meta["name"] == "imagereward" else 1)
        head = small_reward_mlp(inputs, meta["head_widths"])
        head.load_state_dict(load_file(folder / "head.safetensors"))
    return StandInScorer(meta["name"], clip, tokenizer, head, meta["version"], meta["mean"], meta["std"], device)


# ---------------------------------------------------------------- evaluation
def preference_accuracy(scorer: Scorer, images_0, images_1, captions, label_0) -> float:
    """Fraction of non-tied pairs where the scorer prefers the labelled winner (a score tie counts half)."""
    captions = list(captions)
    return agreement(scorer.score(images_0, captions), scorer.score(images_1, captions), label_0)


def agreement(scores_0, scores_1, label_0) -> float:
    """Fraction of non-tied pairs whose higher score is the labelled winner's (a score tie counts half)."""
    label_0 = np.asarray(label_0, dtype=np.float64)
    decided = label_0 != 0.5
    if not decided.any():
        return float("nan")
    correct = np.where(scores_0 == scores_1, 0.5, (np.asarray(scores_0) > np.asarray(scores_1)) == (label_0 == 1))
    return float(correct[decided].mean())


def train_stand_in(name: str, pairs: Pairs, clip_dir, tokenizer_dir, cfg: dict, out_dir,
                   heldout: Pairs | None = None) -> dict:
    """Train, measure on held-out pairs, save to ``out_dir``; returns the summary (also in scorer.json).

    heldout: e.g. the world's validation_unique pairs; without it cfg["heldout_fraction"] (0.1)
    of ``pairs`` is held out. heldout_accuracy is against the stand-in's own raters;
    heldout_accuracy_world against the world's labels (Diffusion-DPO's table).
    """
    if heldout is None:
        order = np.random.default_rng(cfg.get("seed", 0)).permutation(len(pairs))
        n_out = max(1, int(round(cfg.get("heldout_fraction", 0.1) * len(pairs))))
        pairs, heldout = pairs.subset(np.sort(order[n_out:])), pairs.subset(np.sort(order[:n_out]))
    scorer, summary = fit_stand_in(name, pairs, clip_dir, tokenizer_dir, cfg)
    own = stand_in_labels(name, heldout, cfg, seed_offset=1)
    summary["heldout_pairs"] = len(heldout)
    summary["heldout_accuracy"] = preference_accuracy(scorer, heldout.images_0, heldout.images_1, heldout.captions, own)
    summary["heldout_accuracy_world"] = preference_accuracy(
        scorer, heldout.images_0, heldout.images_1, heldout.captions, heldout.label_0)
    save_stand_in(scorer, summary, out_dir)
    return summary
