"""Shared fixtures: the real data root (../shared/data or $NEUROSPEC_DATA) and seeding.

Shared builders (small networks, oracles, tiny models) live in helpers.py, imported as ``helpers``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` (the README's test command) runs two workers on the two cores: each keeps to one thread,
    # and so do the notebook kernels and CLI subprocesses it starts (they inherit OMP_NUM_THREADS); two
    # workers with two torch threads each were several times slower than one thread each
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    torch.set_num_threads(1)


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
