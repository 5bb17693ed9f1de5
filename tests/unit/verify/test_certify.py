"""``verify.certify`` / ``neurospec certify`` and the parallel options of ``verify-batch`` without Ray: argument
checks (all before any work), the single-process path (``workers=1``: Ray is never imported), resuming, bad
input (an address that does not answer, Ray missing). tests/integration/test_ray.py runs them on Ray."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from probe.cli import main
from probe.core.cluster import check_reachable, connect, run_tasks, session
from probe.core.errors import (
    ClusterUnreachableError,
    CorruptDataError,
    InputShapeError,
    InvalidParameterError,
    OutputPathError,
    RayNotInstalledError,
)
from probe.data import ImageDataset, load_digits
from probe.nap import mine
from probe.nap_shards import mine_sharded, shard_ranges
from verify.certify import certify, network_input, results_file

# ---- a tiny classifier of the 8x8 digits --------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_digits("test")


@pytest.fixture(scope="module")
def model():
    """A 64-16-10 ReLU MLP, trained for a few full-batch steps on the digits (about 95% test accuracy)."""
    torch.manual_seed(0)
    train = load_digits("train")
    x, y = train[list(range(len(train)))]
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    opt = torch.optim.Adam(net.parameters(), 0.03)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


@pytest.fixture
def no_ray(monkeypatch):
    """``import ray`` fails, as where Ray is not installed."""
    monkeypatch.setitem(sys.modules, "ray", None)


# ---- argument checks: every one before any work -------------------------------------------------------------


@pytest.mark.parametrize("eps", [0, -0.1, float("nan"), float("inf"), [], [0.02, 0.0], "0.1"])
def test_eps_must_be_positive_and_finite(model, digits, tmp_path, eps):
    out = tmp_path / "c.csv"
    with pytest.raises(InvalidParameterError, match="eps"):
        certify(model, digits, eps=eps, limit=2, out=out, verbose=False)
    assert not out.exists()


@pytest.mark.parametrize("kwargs,match", [({"timeout": 0}, "timeout"), ({"timeout": float("nan")}, "timeout"),
                                          ({"limit": 0}, "limit"), ({"workers": 0}, "workers"),
                                          ({"pgd_steps": 0}, "pgd_steps")])
def test_bad_settings_are_refused_before_any_work(model, digits, tmp_path, kwargs, match):
    out = tmp_path / "c.csv"
    with pytest.raises(InvalidParameterError, match=match):
        certify(model, digits, eps=0.02, out=out, verbose=False, **{"limit": 2, **kwargs})
    assert not out.exists()


def test_out_that_is_a_folder_or_another_csv_is_refused(model, digits, tmp_path):
    with pytest.raises(OutputPathError):
        certify(model, digits, eps=0.02, limit=2, out=tmp_path, verbose=False)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(CorruptDataError, match="is not a certify results CSV"):
        certify(model, digits, eps=0.02, limit=2, out=other, verbose=False)
    assert other.read_text() == "a,b\n1,2\n"


def test_images_that_do_not_fit_the_network_are_refused(digits, tmp_path):
    wrong_inputs = nn.Sequential(nn.Linear(10, 4), nn.ReLU(), nn.Linear(4, 10))
    with pytest.raises(InputShapeError, match=r"shape \(1, 8, 8\)"):
        certify(wrong_inputs, digits, eps=0.02, limit=2, input_shape=(10,), out=tmp_path / "c.csv", verbose=False)
    wrong_classes = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.ReLU(), nn.Linear(4, 3))
    with pytest.raises(InputShapeError, match="10 classes but the network has 3 outputs"):
        certify(wrong_classes, digits, eps=0.02, limit=2, out=tmp_path / "c.csv", verbose=False)
    normalised = load_digits("test", normalize=True)
    with pytest.raises(InvalidParameterError, match=r"pixels in \[0, 1\]"):
        certify(wrong_classes, normalised, eps=0.02, limit=2, verbose=False)
    assert not (tmp_path / "c.csv").exists()


def test_network_input_layouts():
    img = np.arange(12.0).reshape(3, 2, 2)
    assert network_input(img, (3, 2, 2)).tolist() == list(range(12))
    assert network_input(img, (2, 2, 3)).tolist() == img.transpose(1, 2, 0).reshape(-1).tolist()
    assert network_input(img, (12, 1)).shape == (12,)
    with pytest.raises(InputShapeError, match=r"shape \(3, 2, 2\).*\(5,\)"):
        network_input(img, (5,))


# ---- the single-process path ----------------------------------------------------------------------------------


def test_certify_in_one_process_writes_rows_and_resumes(model, digits, tmp_path, no_ray):
    out = tmp_path / "certify.csv"
    report = certify(model, digits, eps=[0.05, 0.01], limit=6, timeout=10, out=out, verbose=False, workers=1)
    rows = results_file(out).rows()
    assert len(rows) == 12 and len({(r["index"], r["eps"]) for r in rows}) == 12
    assert [r["eps"] for r in report.summary] == [0.01, 0.05]  # sorted
    for line in report.summary:
        assert line["images"] == 6
        assert line["verified"] <= line["pgd"] <= line["clean"]  # lower bound <= upper bound <= clean
    assert all(r["result"] in ("verified", "falsified", "misclassified", "timeout", "unknown") for r in rows)
    assert all((r["result"] == "misclassified") == (r["clean"] == "0") for r in rows)
    assert "certified robust accuracy" in str(report) and "verified" in str(report)
    before = out.read_bytes()
    again = certify(model, digits, eps=[0.01, 0.05], limit=6, timeout=10, out=out, verbose=False)
    assert out.read_bytes() == before  # every row was there: nothing ran again
    assert [dict(r) for r in again.summary] == [dict(r) for r in report.summary]
    more = certify(model, digits, eps=[0.01, 0.05], limit=7, timeout=10, out=out, verbose=False)
    assert len(results_file(out).rows()) == 14 and more.summary[0]["images"] == 7


def test_session_with_one_worker_does_not_start_ray(no_ray):
    with session(None, workers=1) as cluster:
        assert cluster is None
    seen = []
    stats = run_tasks(pow, [3, 1, 2], args=(2,), on_result=lambda item, value: seen.append((item, value)),
                      should_run=lambda item: item != 1, verbose=False)
    assert seen == [(3, 9), (2, 4)] and (stats.finished, stats.skipped, stats.on_ray) == (2, 1, False)


def test_sharded_mining_in_one_process_equals_mine(model, digits):
    from probe.data import make_loader

    assert shard_ranges(10, 3, 2) == [(0, 6), (6, 10)] and shard_ranges(5, 8, 4) == [(0, 5)]
    sharded = mine_sharded(model, digits, shards=3, batch_size=64, verbose=False)
    single = mine(model, make_loader(digits, batch_size=64), verbose=False)
    assert sharded == single and sharded.model_relus == single.model_relus
    with pytest.raises(InvalidParameterError, match="shards"):
        mine_sharded(model, digits, shards=0)


# ---- bad input: Ray missing, an address that does not answer --------------------------------------------------


def test_ray_missing_says_pip_install_ray(model, digits, tmp_path, no_ray, capsys):
    with pytest.raises(RayNotInstalledError, match="pip install ray"):
        connect(None, workers=2)
    with pytest.raises(RayNotInstalledError, match="pip install ray"):
        certify(model, digits, eps=0.02, limit=2, workers=2, out=tmp_path / "c.csv", verbose=False)
    assert not (tmp_path / "c.csv").exists()
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "instances.csv").write_text("net.onnx,prop.vnnlib,60\n")
    out = tmp_path / "results.csv"
    assert main(["verify-batch", str(bench / "instances.csv"), "--out", str(out), "--quiet", "--ray", "h:6379"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "pip install ray" in err[0]
    assert not out.exists()


def test_an_address_that_does_not_answer_fails_within_seconds(tmp_path, capsys):
    t0 = time.monotonic()
    with pytest.raises(ClusterUnreachableError, match="does not answer"):
        connect("127.0.0.1:1")
    with pytest.raises(ClusterUnreachableError, match="ray start --head"):
        check_reachable("192.0.2.1:6379", timeout=1)  # TEST-NET-1: never answers
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "instances.csv").write_text("net.onnx,prop.vnnlib,60\n")
    out = tmp_path / "results.csv"
    assert main(["verify-batch", str(bench / "instances.csv"), "--out", str(out), "--quiet", "--ray",
                 "127.0.0.1:1"]) == 1
    assert "does not answer" in capsys.readouterr().err
    assert not out.exists()
    assert time.monotonic() - t0 < 10
    with pytest.raises(InvalidParameterError, match="HOST:PORT"):
        connect("127.0.0.1:notaport")


# ---- the command line -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra,match", [(["--eps", "0"], "eps"), (["--eps", "0.1", "--timeout", "-1"], "--timeout"),
                                         (["--eps", "0.1", "--limit", "0"], "--limit"),
                                         (["--eps", "0.1", "--workers", "0"], "workers")])
def test_certify_command_checks_arguments_first(tmp_path, capsys, extra, match):
    out = tmp_path / "c.csv"
    assert main(["certify", "--onnx", str(tmp_path / "gone.onnx"), "--data", "mnist", "--out", str(out),
                 "--quiet", *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err
    assert not out.exists()


def test_certify_command_refuses_a_missing_onnx_file(tmp_path, capsys):
    assert main(["certify", "--onnx", str(tmp_path / "gone.onnx"), "--data", "mnist", "--eps", "0.02",
                 "--out", str(tmp_path / "c.csv")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_certify_command_refuses_images_of_another_size(data_root, tmp_path, capsys):
    cifar_net = data_root / "vnncomp2021" / "marabou-cifar10" / "cifar10_small.onnx"
    assert main(["certify", "--onnx", str(cifar_net), "--data", "mnist", "--eps", "0.02", "--limit", "2",
                 "--out", str(tmp_path / "c.csv"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "shape (1, 28, 28)" in err and "(32, 32, 3)" in err
    assert not (tmp_path / "c.csv").exists()


def test_verify_batch_with_one_worker_never_imports_ray(tmp_path, no_ray, monkeypatch):
    import verify.cli
    from verify.result import VerificationResult

    monkeypatch.setattr(verify.cli, "run_instance", lambda *a, **k: VerificationResult("verified", "bounds"))
    (tmp_path / "net.onnx").write_bytes(b"")
    (tmp_path / "p.vnnlib").write_text("")
    (tmp_path / "instances.csv").write_text("net.onnx,p.vnnlib,60\n")
    out = tmp_path / "results.csv"
    assert main(["verify-batch", str(tmp_path / "instances.csv"), "--out", str(out), "--quiet", "--workers", "1"]) == 0
    assert [r["result"] for r in results_file_rows(out)] == ["unsat"]


def results_file_rows(path):
    from verify.batch import results_file as batch_results

    return batch_results(path).rows()


def test_dataset_that_is_not_images_is_refused(model):
    with pytest.raises(InvalidParameterError, match="mnist or cifar10"):
        certify(model, "imagenet", eps=0.02, verbose=False)
    tiny = ImageDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64), [str(i) for i in range(10)],
                        name="empty", split="test")
    with pytest.raises(InvalidParameterError, match="no images"):
        certify(model, tiny, eps=0.02, verbose=False)
