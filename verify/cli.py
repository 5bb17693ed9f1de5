"""``neurospec verify`` (one VNN-COMP instance) and ``neurospec verify-batch`` (an instances CSV, resumable).

Example:
    neurospec verify --onnx mnist-net_256x2.onnx --vnnlib prop_0_0.03.vnnlib --timeout 120 --out result.txt
    neurospec verify-batch ../shared/data/vnncomp2021/mnistfc/mnistfc_instances.csv --out results.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import time
from pathlib import Path

from probe.core.artifacts import atomic_write_bytes

__all__ = ["FIELDS", "add_commands", "read_results", "result_row", "run_instance", "write_results"]

logger = logging.getLogger(__name__)

FIELDS = ["onnx", "vnnlib", "timeout", "result", "seconds", "method", "solver", "message"]


def run_instance(onnx_path: str | Path, vnnlib_path: str | Path, timeout: float, solver: str = "cbc",
                 cache: dict | None = None):
    """Load (or reuse from ``cache``) the network, read the property, verify. The time to load the network
    and read the property counts against ``timeout``."""
    from verify.api import verify
    from verify.network import ReluNetwork
    from verify.vnnlib import read_vnnlib

    t0 = time.perf_counter()
    key = str(Path(onnx_path).resolve())
    net = cache.get(key) if cache is not None else None
    if net is None:
        net = ReluNetwork.from_onnx(onnx_path)
        if cache is not None:
            cache[key] = net
    spec = read_vnnlib(vnnlib_path, n_inputs=net.n_inputs, n_outputs=net.n_outputs)
    left = float(timeout) - (time.perf_counter() - t0)
    if left <= 0:
        from verify.result import VerificationResult

        return VerificationResult("timeout", message="loading took the whole time limit", solver=solver)
    res = verify(net, spec, solver=solver, timeout=left)
    res.timings["load"] = time.perf_counter() - t0 - res.timings.get("total", 0.0)
    return res


def _cmd_verify(args: argparse.Namespace) -> int:
    res = run_instance(args.onnx, args.vnnlib, args.timeout, solver=args.solver)
    text = res.vnncomp_text()
    if args.out:
        atomic_write_bytes(args.out, text.encode())
    total = res.timings.get("total", 0.0) + res.timings.get("load", 0.0)
    print(f"{res.vnncomp} ({res.status}, by {res.method or '-'}) in {total:.2f} s"
          + (f": {res.message}" if res.message else ""))
    return 0


def result_row(onnx_rel: str, vnnlib_rel: str, limit: float, res, solver: str) -> dict[str, str]:
    """One row of a results CSV (columns :data:`FIELDS`); seconds include loading the network."""
    seconds = res.timings.get("total", 0.0) + res.timings.get("load", 0.0)
    return {"onnx": onnx_rel, "vnnlib": vnnlib_rel, "timeout": f"{limit:g}", "result": res.vnncomp,
            "seconds": f"{seconds:.3f}", "method": res.method, "solver": solver, "message": res.message}


def read_results(path: Path) -> list[dict[str, str]]:
    """Rows of a results CSV written by :func:`write_results` (empty if it does not exist)."""
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def write_results(path: Path, rows: list[dict[str, str]]) -> None:
    """Write a results CSV atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def _cmd_verify_batch(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from verify.errors import SpecError

    instances = Path(args.instances)
    if not instances.exists():
        raise SpecError(f"instances file {str(instances)!r} does not exist")
    root = Path(args.root) if args.root else instances.parent
    with instances.open(newline="") as fh:
        todo = [row for row in csv.reader(fh) if row and not row[0].startswith("#")]
    for k, row in enumerate(todo):
        if len(row) < 3:
            raise SpecError(f"{instances}:{k + 1}: expected 'onnx,vnnlib,timeout', got {row!r}")
    if args.filter:
        todo = [row for row in todo if args.filter in row[0]]
    if args.limit:
        todo = todo[: args.limit]
    out = Path(args.out)
    done = read_results(out)
    seen = {(r["onnx"], r["vnnlib"]) for r in done}
    cache: dict = {}
    bar = tqdm(todo, desc="verify", disable=args.quiet)
    for onnx_rel, vnnlib_rel, timeout, *_ in bar:
        if (onnx_rel, vnnlib_rel) in seen:
            continue
        limit = float(timeout) * args.timeout_scale
        res = run_instance(root / onnx_rel, root / vnnlib_rel, limit, solver=args.solver, cache=cache)
        done.append(result_row(onnx_rel, vnnlib_rel, limit, res, args.solver))
        write_results(out, done)  # after every instance, atomically: an interrupted run resumes here
        bar.set_postfix(last=f"{res.vnncomp} {done[-1]['seconds']}s", refresh=False)
    counts: dict[str, int] = {}
    for r in done:
        counts[r["result"]] = counts.get(r["result"], 0) + 1
    print(f"{len(done)} instances in {out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


def add_commands(sub) -> None:
    """Register ``verify`` and ``verify-batch`` on the ``neurospec`` sub-parser collection."""
    from verify.solvers import SOLVERS

    one = sub.add_parser("verify", help="verify one ONNX network against one VNN-LIB property (VNN-COMP style)")
    one.add_argument("--onnx", required=True)
    one.add_argument("--vnnlib", required=True)
    one.add_argument("--timeout", type=float, required=True, help="seconds, every phase included")
    one.add_argument("--solver", default="cbc", choices=SOLVERS)
    one.add_argument("--out", default=None, help="write the VNN-COMP result file here")
    one.set_defaults(func=_cmd_verify)

    batch = sub.add_parser("verify-batch", help="verify every instance of a VNN-COMP instances CSV (resumable)")
    batch.add_argument("instances", help="CSV rows: onnx,vnnlib,timeout (paths relative to --root)")
    batch.add_argument("--root", default=None, help="folder the CSV's paths are relative to (default: its folder)")
    batch.add_argument("--out", required=True, help="results CSV; existing rows are kept and skipped")
    batch.add_argument("--solver", default="cbc", choices=SOLVERS)
    batch.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every timeout")
    batch.add_argument("--filter", default=None, help="only instances whose onnx name contains this")
    batch.add_argument("--limit", type=int, default=None, help="only the first N instances")
    batch.add_argument("--quiet", action="store_true")
    batch.set_defaults(func=_cmd_verify_batch)
