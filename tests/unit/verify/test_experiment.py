"""verify.experiment.nap_study on tiny in-process networks: the whole study, its files, resuming after an
interruption, empty classes, bad input; verify.marabou against verify on the same NAP queries; the MILP's
fixed inactive states (a NAP query with a counterexample is ``falsified``, not ``unknown``)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from helpers import relu_network
from torch import nn

import verify
from probe.core.errors import DataError, InputShapeError, InvalidParameterError, ModelError, OutputPathError
from probe.data import ImageDataset
from probe.nap import mine
from verify import experiment
from verify.errors import SolverError
from verify.experiment import NAPStudy, nap_study
from verify.marabou import marabou_available, verify_marabou
from verify.properties import Spec, nap_robustness_spec, robustness

CLASSES = ["a", "b", "c"]


def _clusters(n: int, seed: int, classes: tuple[int, ...] = (0, 1, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    """4x4 one-channel images around one prototype per class (uint8)."""
    gen = torch.Generator().manual_seed(seed)
    protos = torch.tensor([[0.9] * 8 + [0.1] * 8, [0.1] * 8 + [0.9] * 8, [0.9, 0.1] * 8])
    y = torch.tensor([classes[i % len(classes)] for i in range(n)])
    x = protos[y] + 0.12 * torch.randn(n, 16, generator=gen)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).view(n, 1, 4, 4), y


def _data(classes: tuple[int, ...] = (0, 1, 2)) -> tuple[ImageDataset, ImageDataset]:
    xtr, ytr = _clusters(240, 1, classes)
    xte, yte = _clusters(60, 2, classes)
    return (ImageDataset(xtr, ytr, CLASSES, name="toy", split="train"),
            ImageDataset(xte, yte, CLASSES, name="toy", split="test"))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A 16-6-5-3 ReLU classifier trained on the clusters (a second or less)."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    train, _ = _data()
    x, y = train.tensors()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def _study(model: nn.Module, out, **kw) -> NAPStudy:
    settings = {"deltas": [1.0, 0.9], "timeout": 10, "images": 2, "eps_max": 0.5, "refine": 2, "verbose": False}
    return nap_study(model, kw.pop("data", _data()), out, **{**settings, **kw})


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def test_study_writes_every_result(model, tmp_path):
    out = tmp_path / "study"
    study = _study(model, out)
    assert study.empty_classes == []
    # NAP robustness: one query per (delta, class, competitor); non-ambiguity: one per (delta, pair)
    rob = study.select("robustness")
    assert len(rob) == 2 * 3 * 2
    assert {(q["delta"], q["class"], q["competitor"]) for q in rob} == {
        (d, c, j) for d in (1.0, 0.9) for c in range(3) for j in range(3) if j != c}
    assert len(study.select("ambiguity")) == 2 * 3
    for q in study.queries:
        assert q["status"] in ("verified", "falsified", "timeout", "unknown", "error")
        assert q["seconds"] >= 0 and "counterexample" in q
        if q["status"] == "falsified":
            assert len(q["counterexample"]["x"]) == 16
    # radius: both modes for each of the 2 images, and a NAP never makes the proven radius smaller
    assert len(study.radii) == 4
    for row in study.radius_table():
        assert row["with NAP"] >= row["without NAP"]
    files = study.paths
    for key in ("study", "summary", "report", "naps", "queries", "settings"):
        assert files[key].is_file(), key
    for name in ("nap_heatmap_delta1.0.png", "nap_heatmap_delta0.9.png", "verified_share.png", "radius.png",
                 "coverage_per_delta.png"):
        assert (files["figures"] / name).is_file(), name
    obj = json.loads(files["study"].read_text())
    assert obj["format"] == "neurospec.nap-study" and obj["neurospec_format_version"] == 1
    assert len(obj["queries"]) == len(study.queries)
    text = files["summary"].read_text()
    assert "| delta | mean coverage | mean precision |" in text and "NAP robustness" in text
    html = files["report"].read_text()
    assert html.startswith("<!DOCTYPE html>") and "NAP-augmented robustness" in html
    back = NAPStudy.load(out)
    assert back.queries == study.queries and back.naps == study.naps
    assert [s.coverage for s in back.stats] == [s.coverage for s in study.stats]
    # coverage/precision: the study's are NAPSet.sweep's on the test set
    _, test = _data()
    loader = [(test.tensors()[0], test.tensors()[1])]
    assert [s.coverage for s in study.naps.sweep(model, loader, [1.0, 0.9], verbose=False)] == \
        [s.coverage for s in study.stats]


@pytest.mark.slow
def test_resume_after_interruption_redoes_no_finished_query(model, tmp_path, monkeypatch):
    real = experiment.verify_property
    calls: list[str] = []

    def counting(net, spec, **kw):
        calls.append(spec.name)
        return real(net, spec, **kw)

    monkeypatch.setattr(experiment, "verify_property", counting)
    full = _study(model, tmp_path / "full")
    n_full = len(calls)
    assert n_full == len(full.queries) - sum(q["method"] in ("nap-conflict", "implied", "data") for q in full.queries)

    k = 7
    calls.clear()

    def interrupted(net, spec, **kw):
        if len(calls) == k:
            raise KeyboardInterrupt
        return counting(net, spec, **kw)

    monkeypatch.setattr(experiment, "verify_property", interrupted)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _study(model, out)
    first = {q["id"]: q for q in _lines(out / "queries.jsonl")}
    assert len(calls) == k and k <= len(first) <= k + 6  # + the nap-conflict pairs decided without a solver
    assert (out / "naps.json").is_file()

    def no_mining(*args, **kw):
        raise AssertionError("the NAPs were mined again")

    monkeypatch.setattr("probe.nap.mine", no_mining)
    monkeypatch.setattr(experiment, "verify_property", counting)
    calls.clear()
    resumed = _study(model, out)
    assert len(calls) == n_full - k  # no finished query ran again
    again = {q["id"]: q for q in resumed.queries}
    assert set(again) == {q["id"] for q in full.queries}
    for qid, q in first.items():
        assert again[qid] == q  # the finished ones are the records written before the interruption
    assert [(q["id"], q["status"]) for q in resumed.queries] == [(q["id"], q["status"]) for q in full.queries]
    # a third run finds everything done
    calls.clear()
    _study(model, out)
    assert calls == []


def test_resume_adds_queries_for_new_settings_and_refuses_others(model, tmp_path):
    out = tmp_path / "s"
    _study(model, out, deltas=[1.0], images=0, ambiguity=False)
    more = _study(model, out, deltas=[1.0, 0.9], images=0, ambiguity=False)
    assert {q["delta"] for q in more.select("robustness")} == {1.0, 0.9}
    with pytest.raises(InvalidParameterError, match="timeout"):
        _study(model, out, timeout=3)


def test_empty_class_is_reported_not_verified(model, tmp_path):
    study = _study(model, tmp_path / "e", data=_data(classes=(0, 1)), images=1)
    assert study.empty_classes == [2]
    assert all(q.get("class") != 2 for q in study.select("robustness"))
    assert all(2 not in q["pair"] for q in study.select("ambiguity"))
    rows = [r for r in study.robustness_table() if r["class"] == 2]
    assert rows and all("empty" in r["class robust"] for r in rows)
    assert "Empty classes" in study.summary()
    with pytest.raises(DataError, match="no studied class"):
        _study(model, tmp_path / "e2", data=_data(classes=(0, 1)), classes=[2])


def test_marabou_side_by_side(model, tmp_path):
    if not marabou_available():
        pytest.skip("maraboupy is not installed (pip install 'neurospec[benchmark]')")
    study = _study(model, tmp_path / "m", deltas=[0.9], images=0, ambiguity=False, marabou=True)
    ours, theirs = study.select("robustness"), study.select("robustness", "marabou")
    assert len(ours) == len(theirs) == 6
    row = study.marabou_table()[0]
    assert row["queries"] == 6 and row["disagreements"] == 0
    assert "neurospec vs Marabou" in study.summary()


# ---------------------------------------------------------------- bad input, checked before any work


def test_bad_arguments(model, tmp_path):
    out = tmp_path / "bad"
    for deltas in ([], [0.3], [0.99, 0.99], [1.5], ["x"]):
        with pytest.raises(InvalidParameterError, match="delta"):
            _study(model, out, deltas=deltas)
    for timeout in (0, -1, float("nan")):
        with pytest.raises(InvalidParameterError, match="timeout"):
            _study(model, out, timeout=timeout)
    with pytest.raises(SolverError):
        _study(model, out, solver="gurobi")
    with pytest.raises(InvalidParameterError, match="images"):
        _study(model, out, images=-1)
    with pytest.raises(InvalidParameterError, match="class"):
        _study(model, out, classes=[5])
    with pytest.raises(InvalidParameterError, match="dataset"):
        nap_study(model, "imagenet", out)
    assert not out.exists()  # nothing was created


def test_output_folder_that_cannot_be_written(model, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        with pytest.raises(OutputPathError):
            _study(model, out)


def test_dataset_that_does_not_fit_the_network(model, tmp_path):
    x = torch.zeros(20, 1, 5, 5, dtype=torch.uint8)
    y = torch.arange(20) % 3
    wrong = (ImageDataset(x, y, CLASSES, name="toy5", split="train"),
             ImageDataset(x, y, CLASSES, name="toy5", split="test"))
    with pytest.raises(InputShapeError):
        _study(model, tmp_path / "shape", data=wrong)
    two = ["a", "b"]
    x4, y4 = _clusters(20, 0, (0, 1))
    binary = (ImageDataset(x4, y4, two, name="toy2", split="train"), ImageDataset(x4, y4, two, name="toy2", split="test"))
    with pytest.raises(InputShapeError, match="classes"):
        _study(model, tmp_path / "classes", data=binary)


def test_naps_of_another_network_are_refused(model, tmp_path):
    torch.manual_seed(0)
    other = nn.Sequential(nn.Flatten(), nn.Linear(16, 7), nn.ReLU(), nn.Linear(7, 3))
    train, _ = _data()
    naps = mine(other, [train.tensors()], verbose=False)
    with pytest.raises(ModelError, match="ReLU"):
        _study(model, tmp_path / "n", naps=naps)


def test_marabou_requested_but_missing(model, tmp_path, monkeypatch):
    monkeypatch.setattr("verify.marabou.marabou_available", lambda: False)
    with pytest.raises(SolverError, match="maraboupy"):
        _study(model, tmp_path / "nm", marabou=True)


def test_radius_search_doubles_then_bisects():
    seen = []

    def proven(eps: float) -> bool:
        seen.append(eps)
        return eps <= 0.1

    good, bad = experiment._search(proven, 0.01, 1.0, 3)
    assert seen[:5] == [0.01, 0.02, 0.04, 0.08, 0.16] and len(seen) == 8
    assert good <= 0.1 < bad and bad - good <= 0.08 / 8 + 1e-12
    assert experiment._search(lambda e: True, 0.25, 1.0, 3) == (1.0, None)
    assert experiment._search(lambda e: False, 0.25, 1.0, 2) == (0.0, 0.0625)


def test_query_log_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "q.jsonl"
    log = experiment._QueryLog(path)
    log.add({"id": "a", "kind": "robustness", "status": "verified"})
    with open(path, "ab") as fh:
        fh.write(b'{"id": "b", "kind": "robu')
    again = experiment._QueryLog(path)
    assert list(again.records) == ["a"]
    again.add({"id": "c", "kind": "robustness", "status": "timeout"})
    assert list(experiment._QueryLog(path).records) == ["a", "c"]
    bad = tmp_path / "other.jsonl"
    bad.write_text('{"format": "neurospec.nap", "neurospec_format_version": 1}\n')
    with pytest.raises(Exception, match="query log"):
        experiment._QueryLog(bad)


# ---------------------------------------------------------------- fixed states: MILP and Marabou


def _nap_cases():
    """Tiny networks with a NAP-like set of fixed states (a point's pattern on half of the neurons)."""
    for seed in range(10):
        net = relu_network((3, 6, 5, 3), 300 + seed)
        rng = np.random.default_rng(seed)
        x0 = rng.uniform(0, 1, 3)
        pre = net.pre_activations(x0)
        states = {}
        for k, z in enumerate(pre):
            keep = rng.random(z.size) < 0.5
            states[k] = (keep & (z > 0), keep & (z <= 0))
        label = int(np.argsort(net.forward(x0))[-1 - seed % 2])  # odd seeds: x0 itself may be a counterexample
        yield net, nap_robustness_spec(np.zeros(3), np.ones(3), states, label, 3)


def _follows(net, spec: Spec, x: np.ndarray, margin: float = 1e-6) -> bool:
    for k, z in enumerate(net.pre_activations(x)):
        act, ina = spec.relu_states[k]
        if np.any(z[act] <= margin) or np.any(z[ina] > -margin):  # the NAP definition: active iff z > 0
            return False
    return True


def _sampled_nap_violation(net, spec: Spec) -> bool:
    pts = np.random.default_rng(0).random((20_000, 3))
    ys = net.forward(pts)
    return any(_follows(net, spec, p) and spec.violated_by(y, tol=-1e-7) for p, y in zip(pts, ys, strict=True))


def test_nap_queries_with_counterexamples_are_falsified_not_unknown():
    seen = set()
    for net, spec in _nap_cases():
        res = verify.verify(net, spec, solver="highs", timeout=20, attack=False)
        assert res.status in ("verified", "falsified"), (res.status, res.message)
        if _sampled_nap_violation(net, spec):
            assert res.status == "falsified"
        if res.status == "falsified":
            assert _follows(net, spec, res.counterexample.x, margin=0.0)
        seen.add(res.status)
    assert seen == {"verified", "falsified"}


@pytest.mark.skipif(not marabou_available(), reason="maraboupy is not installed (neurospec[benchmark])")
def test_marabou_agrees_with_verify():
    for net, spec in _nap_cases():
        ours = verify.verify(net, spec, timeout=20, attack=False)
        theirs = verify_marabou(net, spec, timeout=20)
        assert theirs.solver == "marabou" and theirs.status in ("verified", "falsified"), theirs.message
        assert theirs.status == ours.status
        if theirs.status == "falsified":
            cex = theirs.counterexample
            assert spec.violated_by(cex.y) and _follows(net, spec, cex.x, margin=0.0)
    # plain robustness (no fixed states), several clauses
    net = relu_network((2, 5, 4, 3), 11)
    x = np.array([0.3, 0.7])
    label = int(np.argmax(net.forward(x)))
    for eps in (0.01, 0.5):
        spec = robustness(x, eps, label, 3)
        assert verify_marabou(net, spec, timeout=20).status == verify.verify(net, spec, timeout=20).status


@pytest.mark.skipif(not marabou_available(), reason="maraboupy is not installed (neurospec[benchmark])")
def test_a_marabou_query_that_overruns_its_limit_is_killed_and_reported_as_timeout(monkeypatch):
    # Marabou does not always stop at its own limit: its query runs in a child process, killed KILL_GRACE s
    # after the limit. A "solve" that hangs stands in for it here (fork copies the patched module); one that
    # crashes gives "error", not an answer.
    import time

    from verify import marabou

    net = relu_network((2, 3, 2), 0)
    spec = robustness(np.zeros(2), 0.1, 0, 2)
    _, core = marabou._core()
    monkeypatch.setattr(marabou, "KILL_GRACE", 0.5)
    monkeypatch.setattr(core, "solve", lambda *a, **k: time.sleep(60))
    t0 = time.perf_counter()
    res = verify_marabou(net, spec, timeout=1)
    assert res.status == "timeout" and time.perf_counter() - t0 < 10

    def crash(*a, **k):
        os._exit(3)

    monkeypatch.setattr(core, "solve", crash)
    assert verify_marabou(net, spec, timeout=5).status == "error"


def test_marabou_bad_input():
    if not marabou_available():
        pytest.skip("maraboupy is not installed")
    net = relu_network((2, 3, 2), 0)
    spec = robustness(np.zeros(2), 0.1, 0, 2)
    with pytest.raises(InvalidParameterError, match="timeout"):
        verify_marabou(net, spec, timeout=0)
    with pytest.raises(Exception, match="inputs"):
        verify_marabou(net, robustness(np.zeros(3), 0.1, 0, 2), timeout=5)
    assert math.isfinite(verify_marabou(net, spec, timeout=5).timings["total"])


def test_command_line(model, tmp_path, capsys):
    from probe.cli import build_parser, main

    args = build_parser().parse_args(["experiment", "nap", "--dataset", "mnist", "--model", "mnist-256x2",
                                      "--out", str(tmp_path / "o"), "--deltas", "0.99", "--images", "2"])
    assert args.deltas == [0.99] and args.images == 2 and args.solver == "highs"
    assert main(["experiment", "nap", "--dataset", "mnist", "--model", "mnist-256x2", "--out", str(tmp_path / "o"),
                 "--deltas", "0.3"]) == 1
    assert "delta" in capsys.readouterr().err
    assert main(["experiment", "nap", "--dataset", "mnist", "--onnx", str(tmp_path / "missing.onnx"),
                 "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_test_images_that_break_a_nap_answer_its_query(model, tmp_path):
    # NAPs mined with every label shifted by one: NAP_c is the pattern of images the model calls c - 1, so test
    # images that follow NAP_c are classified c - 1: counterexamples of NAP robustness (c, c - 1) from the data
    train, test = _data()
    shifted = ImageDataset(train.images, (train.targets + 1) % 3, CLASSES, name="toy", split="train")
    study = _study(model, tmp_path / "d", data=(shifted, test), only_correct=False, deltas=[0.9], images=0)
    by_data = [q for q in study.select("robustness") if q["method"] == "data"]
    assert by_data and all(q["status"] == "falsified" for q in by_data)
    assert {(c, (c - 1) % 3) for c in range(3)} & {(q["class"], q["competitor"]) for q in by_data}
    net = experiment.ReluNetwork.from_torch(model, (1, 4, 4))
    naps = study.naps.with_delta(0.9)
    for q in by_data:
        x = np.asarray(q["counterexample"]["x"])
        y = net.forward(x)
        assert y[q["competitor"]] >= y[q["class"]]
        assert bool(naps.follows(model, torch.tensor(x, dtype=torch.float32).view(1, 1, 4, 4))[0, q["class"]])
    assert study.robustness_summary()[0]["falsified by data"] == len(by_data)
    # without the data, the verifier answers the same queries the same way (or runs out of time)
    alone = _study(model, tmp_path / "v", data=(shifted, test), only_correct=False, deltas=[0.9], images=0,
                   data_counterexamples=False)
    answers = {q["id"]: q for q in alone.select("robustness")}
    assert all(answers[q["id"]]["status"] in ("falsified", "timeout") for q in by_data)
    assert not any(q["method"] == "data" for q in alone.queries)


def test_robustness_queries_start_from_the_competitors_test_images_too(model, tmp_path, monkeypatch):
    real = experiment.verify_property
    seen: dict[tuple[int, int], np.ndarray | None] = {}

    def recording(net, spec, **kw):
        if spec.name.startswith("NAP robustness"):  # one clause, y_c - y_j <= 0: j has the negative coefficient
            seen[(spec.meta["label"], int(np.argmin(spec.unsafe[0][0][0])))] = kw.get("starts")
        return real(net, spec, **kw)

    monkeypatch.setattr(experiment, "verify_property", recording)
    _, test = _data()
    study = _study(model, tmp_path / "s", deltas=[0.9], images=0, ambiguity=False)
    assert any(v is not None for v in seen.values()), "no robustness query reached the verifier with starts"
    flat = test.tensors()[0].reshape(len(test), -1).double().numpy()
    for q in study.select("robustness"):
        starts = seen.get((q["class"], q["competitor"]))
        if starts is None:
            continue
        rows = {tuple(r) for r in np.round(starts, 12)}
        theirs = flat[test.targets.numpy() == q["competitor"]]
        assert all(tuple(r) in rows for r in np.round(theirs, 12))
    # without the data, no starts at all
    seen.clear()
    _study(model, tmp_path / "n", deltas=[0.9], images=0, ambiguity=False, data_counterexamples=False)
    assert all(v is None for v in seen.values())
