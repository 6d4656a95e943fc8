"""Training SPO's step-aware preference model in the tiny profile: the base model's x0
predictions from noised pairs, judged with a PickScore loss, as SPO's ``spm_task.py`` does;
held-out accuracy per timestep bucket (the model itself: diffpo.scoring.step_aware)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffpo.data.preparation import image_to_tensor
from diffpo.models.loading import Pipeline, encode_images, encode_prompts, load_noise_scheduler, load_pipeline
from diffpo.models.sampling import guided_eps, predicted_x0
from diffpo.scoring.stand_ins import Pairs, load_stand_in, pickscore_loss
from diffpo.scoring.step_aware import BUCKETS, StepAwareScorer, save_step_aware

@torch.no_grad()
def predicted_pixels(pipe: Pipeline, noise_scheduler, latents: torch.Tensor, noise: torch.Tensor,
                     timesteps: torch.Tensor, embeds: torch.Tensor, uncond: torch.Tensor,
                     guidance_scale: float) -> torch.Tensor:
    """What the step-aware model judges: x_t = add_noise(latents), the base model's guided
    x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), decoded to [-1, 1] (SPO's get_noised_imgs)."""
    x_t = noise_scheduler.add_noise(latents, noise, timesteps)
    eps = guided_eps(pipe.unet, x_t, timesteps, embeds, uncond, guidance_scale)
    x0 = predicted_x0(noise_scheduler, eps, timesteps, x_t)
    return pipe.vae.decode(x0.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor).sample.float().clamp(-1, 1)


class _Encoded:
    """Everything about a set of pairs that does not change between steps, computed once."""

    def __init__(self, pipe: Pipeline, scorer: StepAwareScorer, pairs: Pairs, resolution: int):
        self.n = len(pairs)
        images = np.concatenate([pairs.images_0, pairs.images_1])
        pixels = torch.from_numpy(np.stack([image_to_tensor(Image.fromarray(im), resolution) for im in images]))
        latents = torch.cat([encode_images(pipe.vae, pixels[i: i + 512]).float() for i in range(0, len(pixels), 512)])
        self.latents_0, self.latents_1 = latents[: self.n], latents[self.n:]
        captions = sorted(set(pairs.captions))
        position = {caption: i for i, caption in enumerate(captions)}
        self.caption_index = torch.tensor([position[c] for c in pairs.captions])
        self.prompt_embeds = encode_prompts(pipe.tokenizer, pipe.text_encoder, captions)
        self.uncond = encode_prompts(pipe.tokenizer, pipe.text_encoder, [""])
        with torch.no_grad():
            self.text = torch.cat([scorer.text_embeds(scorer.tokenize(captions[i: i + 512]))
                                   for i in range(0, len(captions), 512)])
        self.label_0 = torch.from_numpy(pairs.label_0).float()

    def pixels(self, pipe, noise_scheduler, idx, timesteps, noise, guidance_scale) -> torch.Tensor:
        """Predicted clean images of both sides of pairs ``idx`` (2B: side 0, then side 1), one
        t and one noise per pair shared by its two images (SPO: the same noise for both)."""
        embeds = self.prompt_embeds[self.caption_index[idx]]
        return predicted_pixels(pipe, noise_scheduler, torch.cat([self.latents_0[idx], self.latents_1[idx]]),
                                torch.cat([noise, noise]), torch.cat([timesteps, timesteps]),
                                torch.cat([embeds, embeds]), self.uncond, guidance_scale)


# ---------------------------------------------------------------- training (tiny profile)
def timestep_buckets(max_timestep: int, n: int = BUCKETS) -> list[tuple[int, int]]:
    """[lo, hi) ranges splitting [0, max_timestep] into n equal parts."""
    edges = np.linspace(0, max_timestep + 1, n + 1).round().astype(int)
    return [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:])]


class _HeldOut:
    """Held-out pairs noised once per timestep bucket (t uniform in the bucket, seeded), so the
    initial PickScore and the trained model are judged on the very same x0 predictions."""

    def __init__(self, pipe, noise_scheduler, encoded: _Encoded, max_timestep: int, guidance_scale: float, seed: int):
        self.encoded, self.buckets = encoded, timestep_buckets(max_timestep)
        self.decided = encoded.label_0 != 0.5
        generator = torch.Generator().manual_seed(seed + 1)
        self.timesteps, self.pixels = [], []
        for lo, hi in self.buckets:
            t = torch.randint(lo, hi, (encoded.n,), generator=generator)
            noise = torch.randn((encoded.n, *encoded.latents_0.shape[1:]), generator=generator)
            chunks = [encoded.pixels(pipe, noise_scheduler, torch.arange(i, min(i + 256, encoded.n)), t[i: i + 256],
                                     noise[i: i + 256], guidance_scale).unflatten(0, (2, -1))
                      for i in range(0, encoded.n, 256)]
            self.timesteps.append(t)
            self.pixels.append(torch.cat(chunks, dim=1))

    @torch.no_grad()
    def accuracy(self, scorer: StepAwareScorer) -> dict[str, float]:
        """Per bucket: fraction of non-tied pairs where the model prefers the labelled winner (ties of score: half)."""
        out = {}
        winner_0 = self.encoded.label_0 == 1
        for (lo, hi), t, pixels in zip(self.buckets, self.timesteps, self.pixels):
            r_0, r_1 = (self._rewards(scorer, side, t) for side in pixels)
            correct = torch.where(r_0 == r_1, 0.5, ((r_0 > r_1) == winner_0).float())
            out[f"{lo}-{hi - 1}"] = float(correct[self.decided].mean()) if self.decided.any() else float("nan")
        return out

    def _rewards(self, scorer: StepAwareScorer, pixels: torch.Tensor, t: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        text = self.encoded.text[self.encoded.caption_index]
        return torch.cat([scorer.clip.logit_scale.exp() * (scorer.image_embeds(pixels[i: i + chunk], t[i: i + chunk])
                                                           * text[i: i + chunk]).sum(-1)
                          for i in range(0, len(pixels), chunk)])


def fit_step_aware(pickscore_dir: str | Path, pipeline_dir: str | Path, pairs: Pairs, cfg: dict,
                   heldout: Pairs | None = None) -> tuple[StepAwareScorer, dict]:
    """Train in memory: (scorer, summary). SPO's recipe at the tiny profile's scale: per step a
    batch of pairs, one t ~ U{0..max_timestep} and one noise per pair, the base model's guided x0
    predictions decoded, PickScore's loss on the pair (ties as 0.5). The vision tower and the time
    conditioning learn; the text tower and logit_scale stay PickScore's, so text features are
    computed once."""
    seed = cfg.get("seed", 0)
    torch.manual_seed(seed)
    stand_in = load_stand_in(pickscore_dir)
    if stand_in.name != "pickscore":
        raise ValueError(f"{pickscore_dir} holds the {stand_in.name!r} stand-in; the step-aware model starts from pickscore")
    scorer = StepAwareScorer(stand_in.clip, stand_in.tokenizer,
                             version=f"tiny stand-in: {Path(pickscore_dir).name} + SPO's time conditioning, "
                                     f"{cfg['steps']} steps on the base model's x0 predictions")
    pipe, noise_scheduler = load_pipeline(pipeline_dir), load_noise_scheduler(pipeline_dir)
    resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
    max_timestep, guidance = cfg.get("max_timestep", 999), cfg["guidance_scale"]
    data = _Encoded(pipe, scorer, pairs, resolution)
    evaluation = None if heldout is None else _HeldOut(
        pipe, noise_scheduler, _Encoded(pipe, scorer, heldout, resolution), max_timestep, guidance, seed)
    before = evaluation.accuracy(scorer) if evaluation else None

    clip = scorer.clip
    clip.requires_grad_(False)
    trained = [*clip.vision_model.parameters(), *clip.visual_projection.parameters(), *scorer.time.parameters()]
    for p in trained:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(trained, lr=cfg["learning_rate"], weight_decay=cfg.get("weight_decay", 0.01))
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    scale = clip.logit_scale.exp().detach()
    scorer.train()
    log = []
    for _ in range(cfg["steps"]):
        idx = torch.from_numpy(rng.choice(data.n, min(cfg["batch_size"], data.n), replace=False))
        t = torch.randint(0, max_timestep + 1, (len(idx),), generator=generator)
        noise = torch.randn((len(idx), *data.latents_0.shape[1:]), generator=generator)
        pixels = data.pixels(pipe, noise_scheduler, idx, t, noise, guidance)
        image = scorer.image_embeds(pixels, torch.cat([t, t])).view(2, len(idx), -1)
        logits = scale * (image * data.text[data.caption_index[idx]]).sum(-1).t()
        loss = pickscore_loss(logits, data.label_0[idx])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        log.append(loss.item())
    scorer.eval().requires_grad_(False)
    summary = {
        "name": scorer.name, "version": scorer.version, "scale": scorer.scale, "init": str(pickscore_dir),
        "time_conditioning": "SPO adaLN (per vision layer + pooled output), sinusoidal t embedder",
        "frequency_size": scorer.time.t_embedder.frequency_size,
        "steps": cfg["steps"], "batch_size": cfg["batch_size"], "learning_rate": cfg["learning_rate"],
        "guidance_scale": guidance, "max_timestep": max_timestep, "seed": seed,
        "train_pairs": len(pairs), "skipped": pairs.skipped, "final_loss": float(np.mean(log[-20:])),
    }
    if evaluation:
        summary.update(heldout_pairs=len(heldout), heldout_decided_pairs=int(evaluation.decided.sum()),
                       heldout_accuracy_by_t=evaluation.accuracy(scorer), pickscore_accuracy_by_t=before)
    return scorer, summary


def train_step_aware(pickscore_dir: str | Path, pipeline_dir: str | Path, pairs: Pairs, cfg: dict,
                     out_dir: str | Path, heldout: Pairs | None = None) -> dict:
    """Train, measure held-out accuracy per timestep bucket, save to ``out_dir``; returns the summary.

    heldout: e.g. the world's validation_unique pairs; without it cfg["heldout_fraction"] (0.1)
    of ``pairs`` is held out. ``heldout_accuracy_by_t`` is the trained model's accuracy on x0
    predictions from t in each bucket, ``pickscore_accuracy_by_t`` the initial PickScore's on
    the same images. Accuracy falls as t grows (at large t the x0 predictions no longer hold what
    the raters judged); the gap between the two is what training on noised predictions bought.
    """
    if heldout is None:
        order = np.random.default_rng(cfg.get("seed", 0)).permutation(len(pairs))
        n_out = max(1, int(round(cfg.get("heldout_fraction", 0.1) * len(pairs))))
        pairs, heldout = pairs.subset(np.sort(order[n_out:])), pairs.subset(np.sort(order[:n_out]))
    scorer, summary = fit_step_aware(pickscore_dir, pipeline_dir, pairs, cfg, heldout)
    save_step_aware(scorer, summary, out_dir)
    return summary


# ---------------------------------------------------------------- save / load (tiny profile)
