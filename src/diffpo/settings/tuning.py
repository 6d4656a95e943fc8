"""Choosing settings fairly: the declared grids, their checks, and the selection rule.

Every tuned method gets the same budget (``tuning.budget`` grid points, one training seed),
is scored on ``tuning.prompt_set`` only (never on a set a table reports), and is selected by
one rule (``select_points``). A grid may start from another method's selection
(``from: diffusion_dpo``: SEE-Diffusion-DPO tunes gamma at Diffusion-DPO's selected learning
rate and beta). ``tuning.inherit`` names the rows that take a tuned row's selection.
"""

from __future__ import annotations

import itertools
import math

import pandas as pd

from diffpo.errors import UserError

# The settings a grid may vary; every one is a key of a method's training settings.
TUNABLE = ("learning_rate", "beta", "gamma", "steps", "round_updates", "clip_range", "lr_warmup_fraction")


class TuningError(UserError, ValueError):
    """params.yaml's tuning section is inconsistent; the message names the key."""


def grids(params: dict) -> dict[str, dict]:
    """The tuned methods' grids (a method whose grid is null in this profile is not tuned)."""
    return {m: g for m, g in (params["tuning"]["grids"] or {}).items() if g is not None}


def grid_points(params: dict, method: str) -> list[dict]:
    """The grid of ``method`` in declaration order (the last key varies fastest)."""
    grid = {k: v for k, v in grids(params)[method].items() if k != "from"}
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def grid_keys(params: dict, method: str) -> list[str]:
    """Every setting a method's tuning decides: its own grid's keys and those of its ``from`` chain."""
    grid = grids(params)[method]
    inherited = grid_keys(params, grid["from"]) if "from" in grid else []
    return inherited + [k for k in grid if k != "from" and k not in inherited]


def source_of(params: dict, method: str) -> str | None:
    """The tuned method whose selection a row takes (``tuning.inherit``), itself if tuned, else None."""
    if method in grids(params):
        return method
    return params["tuning"]["inherit"].get(method)


def check_tuning(params: dict, source: str = "params.yaml") -> None:
    """Equal budgets, known methods and keys, a tuning set no table reports."""
    tuning, methods, problems = params["tuning"], params["methods"], []
    if tuning["prompt_set"] not in params["prompt_sets"]:
        problems.append(f"tuning.prompt_set: {tuning['prompt_set']!r} is not a name in prompt_sets")
    if tuning["prompt_set"] == params["sample"]["prompt_set"]:
        problems.append(f"tuning.prompt_set: {tuning['prompt_set']!r} is the prompt set the tables report "
                        "(sample.prompt_set); choose settings on another")
    for method, grid in grids(params).items():
        where = f"tuning.grids.{method}"
        if method not in methods:
            problems.append(f"{where}: unknown method; params.yaml defines: {', '.join(sorted(methods))}")
            continue
        unknown = [k for k in grid if k != "from" and k not in TUNABLE]
        if unknown:
            problems.append(f"{where}: cannot tune {unknown}; tunable: {', '.join(TUNABLE)}")
        origin = grid.get("from")
        if origin is not None and (origin not in grids(params) or grids(params)[origin].get("from")):
            problems.append(f"{where}.from: {origin!r} must be a tuned method without a `from` of its own")
        size = math.prod(len(v) for k, v in grid.items() if k != "from")
        if size != tuning["budget"]:
            problems.append(f"{where}: {size} grid points; every method gets the same budget, tuning.budget = "
                            f"{tuning['budget']}")
    for row, origin in tuning["inherit"].items():
        if row not in methods:
            problems.append(f"tuning.inherit.{row}: unknown method")
        if grids(params) and origin not in grids(params):  # no grids (paper profile): nothing is tuned
            problems.append(f"tuning.inherit.{row}: {origin!r} is not a tuned method (a name in tuning.grids)")
    if problems:
        raise TuningError(f"{source} is invalid (profile {params['profile']}):\n" + "\n".join(f"  {p}" for p in problems))


def select_points(results: pd.DataFrame) -> pd.DataFrame:
    """The selection rule: per method, the grid point with the highest mean score; a diverged
    run (score NaN) is never chosen; a tie goes to the earlier point. Adds a ``selected`` column."""
    results = results.sort_values(["method", "point"]).reset_index(drop=True)
    results["selected"] = False
    for method, group in results.groupby("method", sort=False):
        valid = group[group["score"].notna()]
        if valid.empty:
            raise TuningError(f"tuning: every grid point of {method} diverged; widen its grid toward gentler settings")
        best = valid["score"].max()
        results.loc[valid.index[valid["score"] == best][0], "selected"] = True
    return results


def selected_settings(selection: pd.DataFrame) -> dict[str, dict]:
    """{method: {key: value}} of the selected points (their ``setting.*`` columns)."""
    out = {}
    for row in selection[selection["selected"]].to_dict("records"):
        out[row["method"]] = {k.removeprefix("setting."): _plain(v) for k, v in row.items()
                              if k.startswith("setting.") and not _missing(v)}
    return out


def expected_settings(params: dict, selection: pd.DataFrame) -> dict[str, dict]:
    """What params.yaml must hold for each tuned or inheriting row, from the selection."""
    chosen = selected_settings(selection)
    expected = {}
    for method in params["methods"]:
        origin = source_of(params, method)
        if origin is not None and origin in chosen:
            expected[method] = {k: chosen[origin][k] for k in grid_keys(params, origin) if k in chosen[origin]}
    return expected


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value):
    """A CSV cell as params.yaml writes it: 2000.0 read back from a CSV is the integer 2000."""
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return int(value)
    return value
