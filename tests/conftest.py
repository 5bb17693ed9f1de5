"""Shared fixtures: the real data root (../shared/data or $NEUROSPEC_DATA) and seeding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def data_root() -> Path:
    from probe.core.paths import data_root as resolve

    return resolve()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
