"""Where models run and in what precision: one home for every stage's device choices.

Every stage places its models on ``device()``: the accelerator of this process as
``accelerate`` sees it (the local GPU under ``accelerate launch``, ``cuda`` on a one-GPU
machine, the CPU when there is none). Training keeps its trainable weights in float32 and
runs the forward in the mixed-precision dtype (accelerate's autocast); frozen copies (the
reference) may be stored in that dtype. Options for the paper profile: gradient
checkpointing, PyTorch's fused attention (SDPA), and bitsandbytes' 8-bit AdamW.
"""

from __future__ import annotations

import torch

from diffpo.errors import UserError

PRECISIONS = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
              "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ATTENTION = ("sdpa", "eager")
OPTIMIZERS = ("adamw", "adamw_8bit")


class MissingExtraError(UserError, ImportError):
    """An option needs a package that is not installed; the message says how to install it."""


def device() -> torch.device:
    """This process's accelerator (accelerate's ``PartialState``), the CPU when there is none."""
    from accelerate import PartialState

    return PartialState().device


def dtype_of(precision: str) -> torch.dtype:
    """``no``/``fp16``/``bf16`` (accelerate's names) or ``float32``/``float16``/``bfloat16``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def unwrap(model):
    """The module inside a DistributedDataParallel (or torch.compile) wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def model_dtype(model) -> torch.dtype:
    """The dtype of a model's weights; unlike ``model.dtype``, also for a DDP-wrapped model
    (DistributedDataParallel has no ``dtype``: reading it broke every rollout method on
    several GPUs). The first floating-point parameter decides, as diffusers' ``dtype`` does."""
    model = unwrap(model)
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def model_device(model) -> torch.device:
    return next(unwrap(model).parameters()).device


def place(*modules, on: torch.device | str | None = None):
    """Move modules (None skipped) to ``on`` (default: ``device()``); returns the first."""
    target = torch.device(on) if on is not None else device()
    for module in modules:
        if module is not None:
            module.to(target)
    return modules[0] if modules else None


def configure_unet(unet, gradient_checkpointing: bool = False, attention: str = "sdpa") -> None:
    """Memory and speed options of a UNet about to be trained.

    ``sdpa``: PyTorch's scaled_dot_product_attention (flash / memory-efficient kernels on a GPU;
    diffusers' default on torch 2, set explicitly so a run says what it used); ``eager``: the
    plain softmax(QK^T)V, for debugging. Gradient checkpointing recomputes activations in the
    backward pass: about a third more compute for much less activation memory.
    """
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if attention not in ATTENTION:
        raise ValueError(f"unknown attention {attention!r}; known: {', '.join(ATTENTION)}")
    unet.set_attn_processor(AttnProcessor2_0() if attention == "sdpa" else AttnProcessor())
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()


def make_optimizer(parameters, name: str, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, or bitsandbytes' 8-bit AdamW (optimizer states in 8 bits: about 6 GB less for SD-1.5's UNet)."""
    parameters = [p for p in parameters if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    if name == "adamw_8bit":
        try:
            import bitsandbytes
        except ImportError as err:
            raise MissingExtraError(
                "optimizer: adamw_8bit needs bitsandbytes, which is not installed: "
                "`pip install -e .[gpu]` (or `pip install bitsandbytes`), or set optimizer: adamw") from err
        return bitsandbytes.optim.AdamW8bit(parameters, lr=learning_rate, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


def synchronize() -> None:
    """Wait for the GPU's queued work (for timings); nothing on the CPU."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
