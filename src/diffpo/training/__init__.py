"""One training loop for every method: objectives and sample sources are plugged in.

A method (params.yaml ``methods``) is an objective (``OBJECTIVES``) fed by one of three
sources (``TrainConfig.data``): images or pairs from the encoded data set, pairs whose loser
the round's reference checkpoint generates (SePPO, SPIN-Diffusion), or rollouts of the
policy (D3PO, SPO, DDPO). Generating is the expensive part, so it happens once per *round*
of ``round_updates`` optimizer steps, in large batches, and serves the whole round.

Reproducible and resumable by construction: the batch, noise, timesteps and caption
dropout of optimizer step ``s`` (and the generation of round ``r``) are drawn from
generators seeded by (seed, s or r, micro-step, process), so a run resumed from the
checkpoint of step ``s`` continues exactly as an uninterrupted run would, without saving
random-number-generator state.

The package: ``loop`` (``train()``, the objectives, checkpoints, snapshots, the metrics file
and the resume fingerprint), ``reference`` (LoRA adapters and the reference model) and
``sources`` (the examples: data-set images and pairs, generated losers, rollouts; the
seeding). Tests that replace a function the loop calls patch it in its module
(``diffpo.training.sources._forward``), not here.
"""

from diffpo.training.loop import (
    OBJECTIVES,
    Objective,
    _truncate_metrics,
    content_digest,
    run_fingerprint,
    save_unet,
    snapshot_steps,
    train,
)
from diffpo.training.reference import Reference, add_lora, merge_lora
from diffpo.training.sources import (
    BatchSampler,
    DataSource,
    Generators,
    RolloutSource,
    TrainingDiverged,
    _source,
)

__all__ = [
    "OBJECTIVES", "BatchSampler", "DataSource", "Generators", "Objective", "Reference", "RolloutSource",
    "TrainingDiverged", "add_lora", "content_digest", "merge_lora", "run_fingerprint", "save_unet",
    "snapshot_steps", "train",
]
