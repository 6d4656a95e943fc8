"""Shared fixtures: tiny dummy components, built in milliseconds (diffusers' get_dummy_components)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a missing hub file must fail at once, not retry for minutes
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items):
    """The end-to-end run first: under pytest-xdist (pyproject.toml) one worker runs it while the
    other takes the unit tests, and a run started last would leave one core idle until it ends."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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
