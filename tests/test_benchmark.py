"""The benchmark's figures: which generation it times in which precision, and what its report says."""

from diffpo.pipeline.benchmark import PRECISION_NAMES, _generation_precisions, report
from diffpo.settings.params import load_params
from diffpo.settings.configs import TrainConfig, build, method_settings


def _cfg(root, method: str) -> TrainConfig:
    return build(TrainConfig, method_settings(load_params(root / "params.yaml"), method))


def test_generated_losers_are_timed_in_both_precisions_and_rollouts_in_their_own(root):
    # generation_precision is a per-CPU trade (bf16 is faster on some CPUs, not on others):
    # the benchmark shows both, whatever params.yaml configures
    assert _generation_precisions(_cfg(root, "seppo_w")) == ("no", "bf16")
    assert _generation_precisions(_cfg(root, "spin_diffusion")) == ("no", "bf16")
    d3po = _cfg(root, "d3po")
    assert _generation_precisions(d3po) == (d3po.generation_precision,)


def test_report_shows_each_rounds_precision_and_the_machine():
    step = {"label": "SePPO^w", "batch": "32 pairs", "unet_batch": 64, "step_s": 0.2, "floor_s": 0.1, "ratio": 2.0,
            "optimizer_s": 0.01}
    rounds = [{"what": "SePPO^w: one round's generation", "batch": "960 losers, 8 DDIM steps",
               "precision": PRECISION_NAMES[p], "seconds": s, "per_second": 960 / s}
              for p, s in (("no", 16.0), ("bf16", 8.0))]
    figures = {"steps": [step], "rounds": rounds,
               "sampling": {"what": "DDIM sampling", "batch": "160 images", "seconds": 4.0, "images_per_second": 40.0},
               "storage": {"cache_bytes_per_pair": 2245.0, "cache_pairs": 2048, "cache_prompts": 64,
                           "layout_bytes_per_pair": 2243.0},
               "environment": {"machine": "Some CPU, 2 CPU cores", "peak_rss_mb": 900.0, "threads": 1, "repeats": 3}}
    text = report(figures)
    assert "| float32 " in text and "| bf16 autocast " in text and "60.000" in text and "120.000" in text
    assert "Measured on Some CPU, 2 CPU cores" in text
