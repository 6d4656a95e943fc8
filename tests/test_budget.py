"""The compute budget counts the papers' recipes: 2,048 pairs per update wherever they say so."""

import yaml

from diffpo import recipes
from diffpo.budget import run_forwards
from diffpo.config import TrainConfig, build, load_params, method_settings


def test_every_paper_run_is_counted_at_its_effective_batch(root):
    params = load_params(root / "params.yaml", profile="paper")
    assumed = yaml.safe_load((root / "config/compute_budget.yaml").read_text())
    for method, settings in params["methods"].items():
        cfg = build(TrainConfig, method_settings(params, method))
        gpus = assumed["gpus_per_run"].get(cfg.objective, assumed["gpus_per_run"]["default"])
        resolved = recipes.resolve(cfg, gpus)
        counted = run_forwards(resolved, gpus, ratio=1.0)
        per_update = resolved.batch_size * resolved.gradient_accumulation_steps * gpus
        assert counted["examples"] == cfg.steps * per_update, method
        if cfg.effective_batch is not None:
            assert per_update == cfg.effective_batch == 2048, method
        assert counted["train"] > 0 and counted["generation"] >= 0
