"""``neurospec experiment nap`` on mnist-net_256x2 with small limits: 2,000 training images, classes 0 and 1,
two radius images, 2 s per query. The figures of the full study are in benchmarks/RESULTS.md
(benchmarks/nap_study.py); this checks the pipeline on the real network and data, the command line, and
that a second run finds every query done."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from probe.cli import main
from probe.zoo.vnncomp import VNNCOMP_NETWORKS
from verify.experiment import NAPStudy

pytestmark = pytest.mark.integration


def test_nap_study_on_mnist_256x2(data_root, tmp_path, capsys):
    out = tmp_path / "study"
    onnx = data_root / VNNCOMP_NETWORKS["mnist-256x2"]
    argv = ["experiment", "nap", "--dataset", "mnist", "--onnx", str(onnx), "--out", str(out), "--deltas", "0.99",
            "--train-limit", "2000", "--test-limit", "500", "--classes", "0", "1", "--images", "2", "--timeout", "2",
            "--eps-max", "0.05", "--refine", "1", "--root", str(data_root), "--quiet"]
    t0 = time.perf_counter()
    assert main(argv) == 0
    first = time.perf_counter() - t0
    printed = capsys.readouterr().out
    assert "NAP robustness per delta" in printed and "report.html" in printed
    study = NAPStudy.load(out)
    assert study.settings["train_samples"] == 2000 and study.settings["test_samples"] == 500
    assert study.naps.layers == ["relu_0", "relu_1"] and study.naps.num_neurons() == 512
    rob = study.select("robustness")
    assert {(q["class"], q["competitor"]) for q in rob} == {(c, j) for c in (0, 1) for j in range(10) if j != c}
    for q in study.queries:
        assert q["status"] in ("verified", "falsified", "timeout", "unknown"), q
        assert q["seconds"] <= 2.0 + 2.5, q  # the limit, plus at most one solver call's overrun
        if q["status"] == "falsified" and q["kind"] != "radius":
            x = np.asarray(q["counterexample"]["x"])
            assert x.shape == (784,) and x.min() >= 0 and x.max() <= 1
    assert len(study.select("ambiguity")) == 1
    # radius: two images, both modes; the NAP never shrinks the proven radius
    assert len(study.radii) == 4
    for row in study.radius_table():
        assert row["with NAP"] >= row["without NAP"] > 0
    assert 0 < study.stats[0].coverage[0] <= 1 and 0 < study.stats[0].precision[1] <= 1
    obj = json.loads((out / "study.json").read_text())
    assert obj["format"] == "neurospec.nap-study" and len(obj["queries"]) == len(study.queries)
    assert (out / "report.html").stat().st_size > 10_000 and (out / "figures" / "nap_heatmap_delta0.99.png").is_file()
    # the same command again: every query is finished, nothing runs again
    t0 = time.perf_counter()
    assert main(argv) == 0
    assert time.perf_counter() - t0 < min(first, 20.0)
    assert NAPStudy.load(out).queries == study.queries
