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

The package: ``loop`` (``train()``, the objectives, checkpoints, the metrics file and the
resume fingerprint), ``reference`` (LoRA adapters, the reference model, the seeding),
``sources`` (the examples: data-set images and pairs, generated losers, rollouts),
``snapshots`` (the policy along training), ``recipes`` (batch sizes per process count) and
``base_unet`` (the tiny base UNet, pre-trained by this loop). Import from the modules: this
file imports none of them, so that a stage using one does not run (and depend on) the rest.
"""
