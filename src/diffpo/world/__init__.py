"""Synthetic preference world standing in for Pick-a-Pic v2 (Kirstain et al., 2023).

Prompts describe one object: colour and shape always, background, size and position
unless left free. Pairs of 32x32 images come from four "generator models" with distinct
habits; hidden raters label each pair with a Bradley-Terry choice on a ground-truth utility
computed from pixels (``ground_truth``). The base model is pre-trained on a corpus of its
own (``corpus``: other images, looser captions), never on a preference image.

- ``vocabulary``: attributes, words, caption templates;
- ``render``: drawing an object in a generator's style;
- ``ground_truth``: alignment, aesthetics, the raters' utility, degradations, semantic diversity;
- ``generate``: the preference splits, the prompt sets and world.json;
- ``corpus``: the base model's pre-training corpus;
- ``statistics``: facts that need the base model (data better than the base, its diversity).
"""

import importlib

# Names re-exported lazily (PEP 562): importing one submodule, e.g. the corpus, must not
# import the ground truth, so that a job's code dependencies are what it really runs.
_EXPORTS = {
    "generate": ("PROMPT_SCHEMA", "SCHEMA", "WorldConfig", "degradation_table", "make_world", "rate_pairs"),
    "corpus": ("CORPUS_SCHEMA", "make_corpus"),
    "ground_truth": ("DEGRADATIONS", "aesthetic_score", "alignment_components", "alignment_score", "degrade",
                     "preference_score"),
    "render": ("CLEAN_STYLE", "CORPUS_STYLES", "GENERATOR_STYLES", "GeneratorStyle", "decode_jpeg", "encode_jpeg",
               "gaussian_blur", "render", "render_batch"),
    "vocabulary": ("BACKGROUNDS", "COLOURS", "FREE_ATTRIBUTES", "OOD_TEMPLATES", "POSITIONS", "SHAPES", "SIZES",
                   "TEMPLATES", "Attributes", "all_combinations", "all_words", "corpus_caption", "leave_free",
                   "make_caption", "parse_caption"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'diffpo.world' has no attribute {name!r}")
    return getattr(importlib.import_module(f"diffpo.world.{_WHERE[name]}"), name)
