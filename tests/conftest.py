"""Shared fixtures: tiny dummy components, built in milliseconds (diffusers' get_dummy_components)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a missing hub file must fail at once, not retry for minutes
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One torch thread per process: the two xdist workers and the end-to-end run's Snakemake jobs
# already fill the cores, and threads beyond them only spin (the suite ran faster on 2 cores).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def raw_params() -> dict:
    return copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))


@pytest.fixture(scope="session")
def schema() -> dict:
    from diffpo.config import load_schema

    return load_schema()
