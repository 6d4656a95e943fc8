"""Models: loading and building SD-shaped models, devices, sampling, pre-training."""
