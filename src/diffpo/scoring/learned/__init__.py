"""Learned reward models reported by the papers: PickScore, HPSv2, ImageReward, LAION aesthetic.

Every scorer loads the ORIGINAL checkpoint files (a local file/folder or a Hugging Face hub id,
resolved offline when ``HF_HUB_OFFLINE=1``) into transformers components, and exposes one interface::

    scorer = build_scorer("pickscore")               # or load_pickscore(...), load_hpsv2(...), ...
    scores = scorer.score(images_uint8_NHW3, prompts)  # np.ndarray float64 (N,)
    scorer.name, scorer.scale, scorer.version        # what the numbers mean; record them with results

The architecture builders (``pickscore_config``, ``hpsv2_config``, ``imagereward_vision_config``,
``aesthetic_mlp``) and the key mappings (``openclip_to_hf_clip``, ``imagereward_to_hf``) are used
by the real loaders and by the tests, which build tiny models of the same families. See
docs/scorers.md for where the files come from and the scale traps.

The package: ``interface`` (the interface and preprocessing), ``weights`` (default sources,
resolving files offline, loading checkpoints), one module per family (``pickscore``,
``hpsv2``, ``imagereward``, ``aesthetic``) and ``registry`` (``build_scorer``).
"""

from diffpo.scoring.learned.aesthetic import AestheticScorer, load_aesthetic
from diffpo.scoring.learned.interface import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    Scorer,
    aesthetic_mlp,
    clip_preprocess,
    resize_center_crop,
    reward_mlp,
)
from diffpo.scoring.learned.hpsv2 import HPSv2Scorer, hpsv2_config, load_hpsv2, openclip_to_hf_clip
from diffpo.scoring.learned.imagereward import (
    IMAGEREWARD_MAX_LENGTH,
    IMAGEREWARD_MEAN,
    IMAGEREWARD_STD,
    ImageRewardScorer,
    imagereward_text_config,
    imagereward_to_hf,
    imagereward_vision_config,
    load_imagereward,
)
from diffpo.scoring.learned.weights import (
    AESTHETIC_CLIP,
    AESTHETIC_FILE,
    AESTHETIC_MLP,
    AESTHETIC_URL,
    HPSV2_FILES,
    HPSV2_REPO,
    HPSV2_TOKENIZER,
    IMAGEREWARD_FILE,
    IMAGEREWARD_MED_CONFIG,
    IMAGEREWARD_REPO,
    IMAGEREWARD_TOKENIZER,
    PICKSCORE_MODEL,
    PICKSCORE_PROCESSOR,
    _from_pretrained,
    _load_strict,
    _torch_load,
    resolve_file,
)
from diffpo.scoring.learned.pickscore import PickScoreScorer, load_pickscore, pickscore_config
from diffpo.scoring.learned.registry import SCORERS, build_scorer

__all__ = [
    "AESTHETIC_CLIP", "AESTHETIC_FILE", "AESTHETIC_MLP", "AESTHETIC_URL", "HPSV2_FILES", "HPSV2_REPO",
    "HPSV2_TOKENIZER", "IMAGEREWARD_FILE", "IMAGEREWARD_MAX_LENGTH", "IMAGEREWARD_MEAN", "IMAGEREWARD_MED_CONFIG",
    "IMAGEREWARD_REPO", "IMAGEREWARD_STD", "IMAGEREWARD_TOKENIZER", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD",
    "PICKSCORE_MODEL", "PICKSCORE_PROCESSOR", "SCORERS", "AestheticScorer", "HPSv2Scorer", "ImageRewardScorer",
    "PickScoreScorer", "Scorer", "aesthetic_mlp", "build_scorer", "clip_preprocess", "hpsv2_config",
    "imagereward_text_config", "imagereward_to_hf", "imagereward_vision_config", "load_aesthetic", "load_hpsv2",
    "load_imagereward", "load_pickscore", "openclip_to_hf_clip", "pickscore_config", "resize_center_crop",
    "resolve_file", "reward_mlp",
]
