"""diffpo: SePPO and SEE-DPO preference optimisation for text-to-image diffusion, reproduced as a workflow."""

__version__ = "0.1.0"
