"""Shared fixtures: the real data root (../shared/data or $NEUROSPEC_DATA) and seeding.

Shared builders (small networks, oracles, tiny models) live in helpers.py, imported as ``helpers``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def data_root() -> Path:
    from probe.core.paths import data_root as resolve

    return resolve()


@pytest.fixture(scope="module")
def root(data_root: Path) -> Path:
    """The data root under the name most integration tests use."""
    return data_root


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
