"""Parallel work on Ray, on one local cluster of 2 CPUs for the whole module (started and stopped by a
module fixture): verify-batch on Ray gives the sequential results (and an error row for a network a worker
cannot read), a killed worker's task is retried and its result lands once, several drivers on one results
file write every row once, a driver stopped by SIGTERM resumes, sharded NAP mining equals one process, NAP
queries and certify on Ray equal their one-process results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from probe.cli import main
from probe.core.cluster import TaskFailure, connect, run_tasks
from probe.data import load_digits, make_loader
from probe.nap import mine
from probe.nap_shards import mine_sharded
from verify.batch import results_file
from verify.certify import certify
from verify.network import ReluNetwork

pytestmark = pytest.mark.integration

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]
# decided fast and the same way every time (bounds: unsat; attack: sat), see benchmarks/results
FAST = ["prop_2_0.03", "prop_4_0.03", "prop_7_0.03", "prop_1_0.05"]
#: 256x6 instances no phase settles in 2 s (each row takes its whole time limit: a slow batch)
SLOW = ["prop_3_0.05", "prop_5_0.05", "prop_7_0.05", "prop_9_0.05"]


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster (2 CPUs) for the module; this module's task functions travel by value (the
    workers cannot import a test module)."""
    assert not ray.is_initialized()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    c = connect(None, workers=2)
    try:
        yield c
    finally:
        c.close()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        assert not ray.is_initialized()


@pytest.fixture(scope="module")
def model():
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


def _instances(tmp_path: Path, props: list[str], net: str = "mnist-net_256x2.onnx", timeout: float = 30) -> Path:
    path = tmp_path / "instances.csv"
    path.write_text("".join(f"{net},{p}.vnnlib,{timeout:g}\n" for p in props))
    return path


def test_verify_batch_on_ray_equals_sequential(cluster, data_root, tmp_path):
    bench = data_root / "vnncomp2021" / "mnistfc"
    root = tmp_path / "root"
    root.mkdir()
    for f in ["mnist-net_256x2.onnx", *(f"{p}.vnnlib" for p in FAST)]:
        (root / f).symlink_to(bench / f)
    (root / "broken.onnx").write_bytes(b"this is not an ONNX file")
    instances = _instances(tmp_path, FAST)
    with instances.open("a") as fh:
        fh.write("broken.onnx,prop_2_0.03.vnnlib,30\n")
    rows = {}
    for workers in ("1", "2"):
        out = tmp_path / f"results_{workers}.csv"
        assert main(["verify-batch", str(instances), "--root", str(root), "--out", str(out), "--quiet",
                     "--workers", workers]) == 0
        rows[workers] = {(r["onnx"], r["vnnlib"]): r for r in results_file(out).rows()}
    assert len(rows["2"]) == len(FAST) + 1
    assert {k: r["result"] for k, r in rows["2"].items()} == {k: r["result"] for k, r in rows["1"].items()}
    assert [rows["2"][("mnist-net_256x2.onnx", f"{p}.vnnlib")]["result"] for p in FAST] == [
        "unsat", "unsat", "sat", "sat"]
    broken = rows["2"][("broken.onnx", "prop_2_0.03.vnnlib")]  # the worker could not read it: an error row
    assert broken["result"] == "error" and "Onnx" in broken["message"]


def _dies_once(item: str, folder: Path) -> tuple[str, int]:
    """A task whose first run, for items named ``die...``, waits to be killed: it leaves its pid in
    ``<item>.pid``; every run adds its pid to ``<item>.tries``."""
    tries = folder / f"{item}.tries"
    with tries.open("a") as fh:
        fh.write(f"{os.getpid()}\n")
    if item.startswith("die") and len(tries.read_text().split()) == 1:
        (folder / f"{item}.pid").write_text(str(os.getpid()))
        time.sleep(120)
    return item, os.getpid()


def _kill_when_started(folder: Path, items: list[str], killed: list[int]) -> None:
    deadline = time.monotonic() + 120
    for item in items:
        pid_file = folder / f"{item}.pid"
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)


def test_a_killed_worker_is_retried_and_its_result_lands_once(cluster, tmp_path):
    out = results_file(tmp_path / "results.csv")
    got: list[tuple[str, tuple[str, int]]] = []

    def write(item: str, value: tuple[str, int]) -> None:
        got.append((item, value))
        out.append({"onnx": item, "vnnlib": "-", "result": "unsat", "message": str(value[1])})

    killed: list[int] = []
    killer = threading.Thread(target=_kill_when_started, args=(tmp_path, ["die-a"], killed), daemon=True)
    killer.start()
    stats = run_tasks(_dies_once, ["die-a", "b"], args=(tmp_path,), cluster=cluster, on_result=write,
                      max_retries=2, verbose=False)
    killer.join(5)
    assert stats.finished == 2 and stats.failed == 0
    assert sorted(item for item, _ in got) == ["b", "die-a"]  # each result once
    pids = (tmp_path / "die-a.tries").read_text().split()
    assert len(pids) == 2 and int(pids[0]) == killed[0]  # run twice: the first run was killed
    assert dict(got)["die-a"][1] != killed[0]
    rows = out.rows()
    assert sorted(r["onnx"] for r in rows) == ["b", "die-a"]

    # no retries left: the failure is reported, not lost, and the run goes on
    failures: list[tuple[str, TaskFailure]] = []
    killer = threading.Thread(target=_kill_when_started, args=(tmp_path, ["die-c"], killed), daemon=True)
    killer.start()
    stats = run_tasks(_dies_once, ["die-c"], args=(tmp_path,), cluster=cluster, on_result=write, max_retries=0,
                      on_failure=lambda item, failure: failures.append((item, failure)), verbose=False)
    killer.join(5)
    assert stats.failed == 1 and [(i, f.kind) for i, f in failures] == [("die-c", "died")]


def test_several_drivers_on_one_results_file_write_every_row_once(cluster, data_root, tmp_path):
    bench = data_root / "vnncomp2021" / "mnistfc"
    everything = _instances(tmp_path, FAST)
    out = tmp_path / "results.csv"
    codes: list[int] = []

    def driver() -> None:
        codes.append(main(["verify-batch", str(everything), "--root", str(bench), "--out", str(out), "--quiet",
                           "--workers", "2"]))

    threads = [threading.Thread(target=driver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert codes == [0, 0]
    keys = [(r["onnx"], r["vnnlib"]) for r in results_file(out).rows()]
    assert len(keys) == len(set(keys)) == len(FAST)


def test_a_driver_stopped_by_sigterm_resumes_from_the_results_file(cluster, data_root, tmp_path, capsys):
    bench = data_root / "vnncomp2021" / "mnistfc"
    instances = _instances(tmp_path, SLOW, net="mnist-net_256x6.onnx", timeout=2)
    out = tmp_path / "results.csv"
    args = ["verify-batch", str(instances), "--root", str(bench), "--out", str(out), "--quiet",
            "--ray", cluster.address]
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from probe.cli import main; sys.exit(main())",
                             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not results_file(out).rows():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no row written in 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, (stdout, stderr)
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted by SIGTERM: ") and "run the same command again to resume" in last
    first = results_file(out).rows()
    assert 1 <= len(first) < len(SLOW), first
    capsys.readouterr()
    assert main(args) == 0  # the same command: resumes
    rows = results_file(out).rows()
    assert rows[: len(first)] == first  # finished rows were not redone
    assert sorted(r["vnnlib"] for r in rows) == sorted(f"{p}.vnnlib" for p in SLOW)


def test_sharded_mining_and_nap_queries_on_ray_equal_one_process(cluster, model):
    import verify

    digits = load_digits("train")
    sharded = mine_sharded(model, digits, shards=4, batch_size=128, workers=2, verbose=False)
    single = mine(model, make_loader(digits, batch_size=128), verbose=False)
    assert sharded == single and sharded.model_relus == single.model_relus
    net = ReluNetwork.from_torch(model, (1, 8, 8))
    naps = single.with_delta(0.95)
    here = verify.nap_robustness(net, naps, classes=[0, 1], timeout=20)
    there = verify.nap_robustness(net, naps, classes=[0, 1], timeout=20, workers=2)
    assert {c: [r.status for r in rs] for c, rs in there.items()} == {c: [r.status for r in rs] for c, rs in here.items()}
    pairs = [(0, 1), (2, 3), (4, 5)]
    here = verify.nap_ambiguity(net, naps, pairs=pairs, timeout=20)
    there = verify.nap_ambiguity(net, naps, pairs=pairs, timeout=20, workers=2)
    assert {p: r.status for p, r in there.items()} == {p: r.status for p, r in here.items()}


def test_certify_on_ray_equals_one_process(cluster, model, tmp_path):
    digits = load_digits("test")
    here = certify(model, digits, eps=[0.01, 0.05], limit=6, timeout=20, verbose=False)
    out = tmp_path / "certify.csv"
    there = certify(model, digits, eps=[0.01, 0.05], limit=6, timeout=20, out=out, workers=2, verbose=False)
    columns = ("index", "eps", "clean", "pgd", "result")
    assert [tuple(r[c] for c in columns) for r in there.records] == [tuple(r[c] for c in columns) for r in here.records]
    assert len(there.records) == 12
    assert [dict(r, seconds=0) for r in there.summary] == [dict(r, seconds=0) for r in here.summary]


def test_certify_command_on_ray(cluster, tmp_path, capsys):
    out = tmp_path / "cert.csv"
    args = ["certify", "--model", "mnist-256x2", "--data", "mnist", "--eps", "0.02", "0.05", "--limit", "3",
            "--timeout", "10", "--out", str(out), "--workers", "2", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "certified robust accuracy: mnist-256x2 on mnist, first 3 images" in printed
    rows = results_file_certify(out)
    assert len(rows) == 6 and {r["model"] for r in rows} == {"mnist-256x2"}
    assert main(args) == 0 and results_file_certify(out) == rows  # resumed: nothing ran again


def results_file_certify(path: Path) -> list[dict[str, str]]:
    from verify.certify import results_file as certify_results

    return certify_results(path).rows()
