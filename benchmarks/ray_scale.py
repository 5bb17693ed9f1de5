"""Scale-out on Ray: speed-up of ``verify-batch`` and ``certify`` with 2 workers over 1 (one run each), Ray's own
overhead per task (empty-task round trip), and the certified robust accuracy of mnist-net_256x2 at eps 0.02 and
0.05 on the first MNIST test images (clean, PGD and verified accuracy), within a time budget.

The certified-accuracy rows go to benchmarks/results/ray_certify_256x2.csv as images finish (resumable: a rerun
continues where the last one stopped); images are taken in chunks of 50 until ``--budget`` seconds are spent,
so the figure covers the first N images, N a multiple of 50 (up to ``--images``).

Run: .venv/bin/python benchmarks/ray_scale.py [--budget 900] [--images 1000] [--timeout 10]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, write_result

from probe.cli import main
from probe.core.cluster import connect, import_ray, run_tasks
from probe.core.paths import data_root
from probe.data import load_mnist
from verify.batch import results_file
from verify.certify import certify, load_network

#: 256x2 instances of mixed difficulty (bounds, branch and bound, attack): seconds each, not minutes
BATCH = ["prop_0_0.03", "prop_2_0.03", "prop_3_0.03", "prop_4_0.03", "prop_5_0.03", "prop_6_0.03",
         "prop_7_0.03", "prop_9_0.03", "prop_13_0.03", "prop_0_0.05", "prop_6_0.05", "prop_12_0.05"]
CERT_CSV = RESULTS / "ray_certify_256x2.csv"


def _noop(x: int) -> int:
    return x


def _quiet_main(args: list[str]) -> float:
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    assert code == 0, code
    return time.perf_counter() - t0


def overhead(cluster) -> dict:
    """Round trip of an empty Ray task (submit, run, get; one at a time) and the cost per task of
    run_tasks over many empty tasks (2 in flight)."""
    ray = import_ray()
    remote = ray.remote(num_cpus=1)(_noop)
    ray.get([remote.remote(i) for i in range(20)])  # workers up
    times = []
    for i in range(200):
        t0 = time.perf_counter()
        ray.get(remote.remote(i))
        times.append(time.perf_counter() - t0)
    n = 300
    t0 = time.perf_counter()
    run_tasks(_noop, list(range(n)), cluster=cluster, on_result=lambda item, value: None, verbose=False)
    per_task = (time.perf_counter() - t0) / n
    return {"round_trip_median_ms": 1000 * statistics.median(times), "round_trip_p90_ms":
            1000 * sorted(times)[int(0.9 * len(times))], "run_tasks_per_task_ms": 1000 * per_task}


def batch_speedup(tmp: Path) -> dict:
    bench = data_root() / "vnncomp2021" / "mnistfc"
    instances = tmp / "instances.csv"
    instances.write_text("".join(f"mnist-net_256x2.onnx,{p}.vnnlib,60\n" for p in BATCH))
    args = ["verify-batch", str(instances), "--root", str(bench), "--quiet"]
    seq = _quiet_main([*args, "--out", str(tmp / "seq.csv")])
    par = _quiet_main([*args, "--out", str(tmp / "par.csv"), "--workers", "2"])  # starts and stops its own cluster
    a = {(r["onnx"], r["vnnlib"]): r["result"] for r in results_file(tmp / "seq.csv").rows()}
    b = {(r["onnx"], r["vnnlib"]): r["result"] for r in results_file(tmp / "par.csv").rows()}
    return {"instances": len(BATCH), "seconds_1_worker": seq, "seconds_2_workers": par, "speedup": seq / par,
            "same_answers": a == b}


def certify_speedup(net, data, cluster, images: int, timeout: float) -> dict:
    certify(net, data, [0.02], limit=2, timeout=timeout, verbose=False, workers=2)  # workers up, verify imported
    t0 = time.perf_counter()
    one = certify(net, data, [0.02, 0.05], limit=images, timeout=timeout, verbose=False)
    seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    two = certify(net, data, [0.02, 0.05], limit=images, timeout=timeout, verbose=False, workers=2)
    par = time.perf_counter() - t0
    same = [(r["result"], r["pgd"]) for r in one.records] == [(r["result"], r["pgd"]) for r in two.records]
    return {"images": images, "eps": [0.02, 0.05], "timeout": timeout, "seconds_1_worker": seq,
            "seconds_2_workers": par, "speedup": seq / par, "same_answers": same,
            "cluster_started_before": cluster is not None}


def certified_accuracy(net, data, budget: float, images: int, timeout: float) -> tuple[list[dict], int, float]:
    t0 = time.perf_counter()
    done = 0
    report = None
    while done < images and time.perf_counter() - t0 < budget:
        done = min(images, done + 50)
        report = certify(net, data, [0.02, 0.05], limit=done, timeout=timeout, out=CERT_CSV, workers=2,
                         model_name="mnist-256x2", verbose=False)
        print(report, flush=True)
    assert report is not None
    return [dict(r) for r in report.summary], done, time.perf_counter() - t0


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=900.0, help="seconds for the certified-accuracy run")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per image and eps")
    parser.add_argument("--speedup-images", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        batch = batch_speedup(Path(tmp))
    print("verify-batch:", batch, flush=True)
    net, _ = load_network(model="mnist-256x2")
    data = load_mnist("test")
    t0 = time.perf_counter()
    cluster = connect(None, workers=2)
    start_s = time.perf_counter() - t0
    try:
        over = overhead(cluster)
        print("overhead:", over, flush=True)
        cert = certify_speedup(net, data, cluster, args.speedup_images, args.timeout)
        print("certify:", cert, flush=True)
        summary, n_images, seconds = certified_accuracy(net, data, args.budget, args.images, args.timeout)
    finally:
        cluster.close()
    rows = [{"eps": r["eps"], "images": r["images"], "clean": f"{r['clean']:.3f}", "pgd (upper)": f"{r['pgd']:.3f}",
             "verified (lower)": f"{r['verified']:.3f}", "falsified": r["falsified"], "timeout": r["timeout"],
             "other": r["other"], "s/image": f"{r['seconds']:.2f}"} for r in summary]
    command = " ".join(["python benchmarks/ray_scale.py", *sys.argv[1:]])
    write_result("ray_scale", command, {
        "title": "Scale-out on Ray (verify-batch, certify, task overhead, certified accuracy of mnist-net_256x2)",
        "notes": [
            "Machine shared with other jobs (2 cores, load average well above 2 during the run): speed-ups are "
            "one run each and noisy.",
            f"verify-batch: {batch['instances']} mnist-net_256x2 instances (timeout 60 s), --workers 1 versus "
            "--workers 2 (its time includes starting and stopping its own local cluster).",
            f"certify: first {cert['images']} MNIST test images at eps 0.02 and 0.05, {args.timeout:g} s per image and "
            "eps, workers=1 versus workers=2 on a cluster started (and its workers warmed up on 2 images) beforehand.",
            f"Local cluster start (ray.init, 2 CPUs): {start_s:.1f} s.",
            f"Certified accuracy: the first {n_images} of the first {args.images} MNIST test images fit in the "
            f"{args.budget:g} s budget ({seconds:.0f} s spent; 2 workers, {args.timeout:g} s per image and eps, CBC); "
            "per-image rows: benchmarks/results/ray_certify_256x2.csv. PGD accuracy is an upper bound, verified "
            "accuracy a lower bound on the robust accuracy; timeouts count as not verified.",
        ],
        "tables": [
            {"caption": "Speed-up with 2 workers over 1 (one run)",
             "columns": ["work", "1 worker (s)", "2 workers (s)", "speed-up", "same answers"],
             "rows": [{"work": f"verify-batch, {batch['instances']} instances", "1 worker (s)": f"{batch['seconds_1_worker']:.1f}",
                       "2 workers (s)": f"{batch['seconds_2_workers']:.1f}", "speed-up": f"{batch['speedup']:.2f}",
                       "same answers": batch["same_answers"]},
                      {"work": f"certify, {cert['images']} images x 2 eps", "1 worker (s)": f"{cert['seconds_1_worker']:.1f}",
                       "2 workers (s)": f"{cert['seconds_2_workers']:.1f}", "speed-up": f"{cert['speedup']:.2f}",
                       "same answers": cert["same_answers"]}]},
            {"caption": "Ray's overhead per task (empty task)",
             "columns": ["measure", "ms"],
             "rows": [{"measure": "round trip, one at a time (median)", "ms": f"{over['round_trip_median_ms']:.2f}"},
                      {"measure": "round trip, one at a time (90th percentile)", "ms": f"{over['round_trip_p90_ms']:.2f}"},
                      {"measure": "run_tasks, 300 tasks, per task", "ms": f"{over['run_tasks_per_task_ms']:.2f}"}]},
            {"caption": f"Certified robust accuracy of mnist-net_256x2, first {n_images} MNIST test images",
             "columns": list(rows[0]), "rows": rows},
        ],
        "raw": {"verify_batch": batch, "certify": cert, "overhead": over, "cluster_start_s": start_s,
                "certified": summary, "certified_images": n_images, "certified_seconds": seconds},
    })


if __name__ == "__main__":
    main_benchmark()
