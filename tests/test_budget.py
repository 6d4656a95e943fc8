"""The compute budget counts the papers' recipes: 2,048 pairs per update wherever they say so."""

import yaml

from diffpo.training import recipes
from diffpo.pipeline.budget import run_forwards
from diffpo.settings.params import load_params
from diffpo.settings.configs import TrainConfig, build, method_settings


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
        # Offline methods generate nothing; SePPO and SPIN sample their losers, the online methods their rollouts.
        generates = cfg.data == "rollouts" or cfg.losers == "reference"
        assert counted["train"] > 0 and (counted["generation"] > 0) == generates, method


def test_forwards_of_small_runs_are_the_hand_counted_ones():
    seppo = TrainConfig(objective="seppo", images="winners", losers="reference", steps=3, batch_size=2,
                        learning_rate=1e-3, beta=1.0, round_updates=1, sampler_steps=5, checkpoint_every=1)
    counted = run_forwards(seppo, gpus=2, ratio=1.0)
    assert counted["examples"] == 3 * 2 * 2  # updates x batch x GPUs
    # 3 updates x 8 UNet samples (4 winners, 4 generated losers) x (3 policy forward + backward, 1 reference)
    assert counted["train"] == 3 * 8 * 4 == 96
    # every update's 4 losers sampled in 5 steps, guidance doubling the batch
    assert counted["generation"] == 3 * 4 * 5 * 2 == 120
    d3po = TrainConfig(objective="d3po", steps=4, round_updates=2, batch_size=1, learning_rate=1e-3, beta=1.0,
                       rollout_prompts=3, sampler_steps=5, reward_scorer="brightness", checkpoint_every=2)
    # 2 rounds x 3 prompts on each of 2 GPUs x 2 chains a prompt (the pair) x 5 steps x 2 (guidance)
    assert run_forwards(d3po, gpus=2, ratio=1.0)["generation"] == 2 * 3 * 2 * 2 * 5 * 2 == 240


def test_a_committed_report_names_no_folder_of_the_machine_it_was_measured_on():
    from diffpo.pipeline.budget import portable_path

    assert portable_path("../clean3/results/world") == portable_path("/data/x/results/world") == "results/world"
    assert portable_path("results/world") == "results/world"
