"""verify.vnnlib on the real VNN-COMP 2021 properties: mnistfc (30 files) and marabou-cifar10 (72 files)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from probe.core.paths import data_root
from verify.vnnlib import read_vnnlib

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vnncomp() -> Path:
    return data_root() / "vnncomp2021"


def _parse_all(files: list[Path], n_inputs: int) -> tuple[list, list[float]]:
    specs, seconds = [], []
    for path in files:
        start = time.perf_counter()
        specs.append(read_vnnlib(path, n_inputs=n_inputs, n_outputs=10))
        seconds.append(time.perf_counter() - start)
    return specs, seconds


def _report(benchmark: str, seconds: list[float]) -> None:
    print(f"\n{benchmark}: parsed {len(seconds)} files in {sum(seconds):.3f} s "
          f"(mean {1e3 * np.mean(seconds):.1f} ms, max {1e3 * max(seconds):.1f} ms)")


def test_mnistfc_properties(vnncomp: Path) -> None:
    files = sorted((vnncomp / "mnistfc").glob("prop_*.vnnlib"))
    assert len(files) == 30
    specs, seconds = _parse_all(files, 784)
    _report("mnistfc", seconds)
    for path, spec in zip(files, specs, strict=True):
        eps = float(re.fullmatch(r"prop_\d+_([\d.]+)", path.stem).group(1))
        label = int(re.search(r"; Mnist property with label: (\d+)\.", path.read_text()).group(1))
        assert spec.name == path.stem
        assert spec.n_inputs == 784 and spec.n_outputs == 10
        assert np.all(spec.lower >= 0.0) and np.all(spec.upper <= 1.0) and np.all(spec.lower <= spec.upper)
        assert np.all(spec.upper - spec.lower <= 2 * eps + 1e-6)
        assert np.any(spec.upper - spec.lower > eps)  # not a degenerate box
        # (or (and (>= Y_j Y_label)) ...): one clause per competitor j, the row y_label - y_j <= 0.
        assert len(spec.unsafe) == 9
        competitors = []
        for a, b in spec.unsafe:
            assert a.shape == (1, 10) and b.tolist() == [0.0]
            assert a[0, label] == 1.0 and np.count_nonzero(a) == 2 and a.sum() == 0.0
            competitors.append(int(np.argmin(a[0])))
        assert competitors == [j for j in range(10) if j != label]


def test_marabou_cifar10_properties(vnncomp: Path) -> None:
    files = sorted((vnncomp / "marabou-cifar10").glob("*.vnnlib"))
    assert len(files) == 72
    specs, seconds = _parse_all(files, 3072)
    _report("marabou-cifar10", seconds)
    for path, spec in zip(files, specs, strict=True):
        eps_text, target, orig = re.search(r"_eps([\d.]+)_target(\d+)_orig(\d+)$", path.stem).groups()
        eps, target = float(eps_text), int(target)
        header = path.read_text().splitlines()[0]
        assert f"correct label {orig}, target label {target}, epsilon {eps_text}" in header
        assert spec.n_inputs == 3072 and spec.n_outputs == 10
        assert np.all(spec.lower >= 0.0) and np.all(spec.upper <= 1.0) and np.all(spec.lower <= spec.upper)
        assert np.all(spec.upper - spec.lower <= 2 * eps + 1e-6)
        # Nine top-level asserts (>= Y_target Y_j), conjoined: one clause, rows y_j - y_target <= 0.
        assert len(spec.unsafe) == 1
        a, b = spec.unsafe[0]
        assert a.shape == (9, 10) and b.tolist() == [0.0] * 9
        others = [j for j in range(10) if j != target]
        expected = np.zeros((9, 10))
        expected[np.arange(9), others] = 1.0
        expected[:, target] = -1.0
        np.testing.assert_array_equal(a, expected)
        # The target class scoring at least as high as every other one is unsafe.
        y = np.zeros(10)
        y[target] = 1.0
        assert spec.violated_by(y) and not spec.violated_by(-y)
