"""``neurospec verify`` (one VNN-COMP instance) and ``neurospec verify-batch`` (an instances CSV, resumable).

Example:
    neurospec verify --onnx mnist-net_256x2.onnx --vnnlib prop_0_0.03.vnnlib --timeout 120 --out result.txt
    neurospec verify-batch ../shared/data/vnncomp2021/mnistfc/mnistfc_instances.csv --out results.csv
    neurospec verify-batch ../shared/data/vnncomp2021/mnistfc/mnistfc_instances.csv --out results.csv --workers 2
    neurospec verify-batch instances.csv --out results.csv --ray HEAD:6379      # a cluster of `ray start`
    neurospec certify --model mnist-256x2 --data mnist --eps 0.02 0.05 --limit 100 --timeout 30 --out cert.csv

``verify-batch`` checks everything before it runs an instance (every row of the instances CSV, that ``--out``
can be written and, if it exists, is a results CSV), writes each row as soon as its instance finishes
(:meth:`probe.core.resultsfile.ResultsFile.append`: locked, atomic, safe with several runs on one file), and
on SIGINT/SIGTERM exits with 128 + the signal's number and one line saying how to resume. With
``--workers N`` (N > 1) or ``--ray ADDRESS`` each instance is a Ray task (:mod:`verify.distributed`); this
process still writes every row, as each task finishes, and a signal cancels the tasks still running.

``certify`` (:func:`verify.certify.certify`) reports clean, PGD and verified accuracy per eps, and writes one
row per image and eps as images finish (resumable, ``--workers``/``--ray`` as above).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from probe.core.artifacts import atomic_write_bytes
from probe.core.errors import InvalidParameterError, NeurospecError
from probe.core.paths import check_output
from verify.batch import FIELDS, missing_files, read_instances, result_row, results_file, settings_mismatch
from verify.errors import SolverError

__all__ = ["FIELDS", "add_commands", "read_results", "result_row", "run_instance", "write_results"]

logger = logging.getLogger(__name__)


def run_instance(onnx_path: str | Path, vnnlib_path: str | Path, timeout: float, solver: str = "cbc",
                 cache: dict | None = None):
    """Load (or reuse from ``cache``) the network, read the property, verify. The time to load the network
    and read the property counts against ``timeout``."""
    from verify.api import verify
    from verify.network import ReluNetwork
    from verify.vnnlib import read_vnnlib

    if not float(timeout) > 0:
        raise InvalidParameterError(f"timeout must be a positive number of seconds; got {timeout!r}")
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
    _seconds("--timeout", args.timeout)
    if args.out:
        check_output(args.out)
    res = run_instance(args.onnx, args.vnnlib, args.timeout, solver=args.solver)
    text = res.vnncomp_text()
    if args.out:
        atomic_write_bytes(args.out, text.encode())
    total = res.timings.get("total", 0.0) + res.timings.get("load", 0.0)
    print(f"{res.vnncomp} ({res.status}, by {res.method or '-'}) in {total:.2f} s"
          + (f": {res.message}" if res.message else ""))
    return 0


def read_results(path: str | Path) -> list[dict[str, str]]:
    """Rows of a results CSV (empty if it does not exist); a file that is not one raises
    :class:`~probe.core.errors.CorruptDataError`. See :func:`verify.batch.results_file`."""
    return results_file(path).rows()


def write_results(path: str | Path, rows: list[dict[str, str]]) -> None:
    """Replace a results CSV with ``rows`` (locked, atomic). To add one row while other processes may
    write too, use ``verify.batch.results_file(path).append(row)``."""
    results_file(path).write(rows)


def _seconds(param: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise InvalidParameterError(f"{param} must be a positive number of seconds; got {value:g}")
    return value


class _Stop(BaseException):
    """Raised by the SIGINT/SIGTERM handler of ``verify-batch``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stopping_on_signals(state: dict) -> Iterator[None]:
    """SIGINT/SIGTERM raise :class:`_Stop` while ``state["armed"]``; otherwise they are noted in
    ``state["signum"]`` and raised by the loop once the finished row is on disk."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        state["signum"] = signum
        if state["armed"]:
            raise _Stop(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _cmd_verify_batch(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from verify.result import VerificationResult

    scale = _seconds("--timeout-scale", args.timeout_scale)
    parallel = _parallel(args)  # checks --workers, and that Ray can be imported when it is needed
    if args.limit is not None and args.limit < 0:
        raise InvalidParameterError(f"--limit must be a number of instances >= 0; got {args.limit}")
    instances = Path(args.instances)
    every = read_instances(instances)  # checks every row (paths, timeout) before anything runs
    root = Path(args.root) if args.root else instances.parent
    selected = [i for i in every if not args.filter or args.filter in i.onnx]
    if args.limit:
        selected = selected[: args.limit]
    out = Path(args.out)
    results = results_file(out, fix="pass another --out, or move that file away")
    results.check()  # writable, and an existing file is a results CSV: before anything runs
    start = results.by_key()
    mismatch = settings_mismatch(list(start.values()), every, args.solver, scale)
    if mismatch:
        text = (f"{mismatch.rows} of the {len(start)} rows already in {out} were made with other settings than "
                f"this run's (solver {args.solver}, --timeout-scale {scale:g}): {mismatch.describe()}; they are "
                "kept (re-run only by --redo-timeouts/--redo-errors), new rows use this run's settings (pass another --out to keep runs apart)")
        logger.warning(text)
        print(f"warning: {text}")
    redo = {"timeout"} if args.redo_timeouts else set()
    if args.redo_errors:
        redo.add("error")
    todo = [i for i in selected if i.key not in start or start[i.key]["result"] in redo]
    created = results.ensure()
    if not selected:
        filtered = " after --filter/--limit" if every else ""
        print(f"no instances in {instances}{filtered}; "
              + (f"wrote {out} with the header only" if created else f"{out} left as it was"))
        return 0

    if parallel:
        return _verify_batch_parallel(args, todo, start, results, root, scale, selected)
    cache: dict = {}
    finished = 0
    state = {"armed": True, "signum": None}
    bar = tqdm(todo, desc="verify", disable=args.quiet)
    with _stopping_on_signals(state):  # from here to the summary, SIGINT and SIGTERM raise _Stop
        try:
            for inst in bar:
                if results.by_key().get(inst.key) != start.get(inst.key):
                    continue  # another process finished this instance meanwhile
                limit = inst.timeout * scale
                reason = missing_files(inst, root)
                if reason:
                    res = VerificationResult("error", message=reason, solver=args.solver)
                else:
                    try:
                        res = run_instance(root / inst.onnx, root / inst.vnnlib, limit, solver=args.solver,
                                           cache=cache)
                    except SolverError:
                        raise  # the solver itself is unusable: every instance would fail
                    except NeurospecError as err:  # this instance's files: record it and go on
                        res = VerificationResult("error", message=f"{type(err).__name__}: {err}", solver=args.solver)
                state["armed"] = False  # a signal from here on waits until the row is on disk
                row = result_row(inst.onnx, inst.vnnlib, limit, res, args.solver)
                results.append(row)
                finished += 1
                state["armed"] = True
                if state["signum"] is not None:
                    raise _Stop(state["signum"])
                bar.set_postfix(last=f"{res.vnncomp} {row['seconds']}s", refresh=False)
        except (_Stop, KeyboardInterrupt) as err:
            state["armed"] = False  # a second signal while reporting is only noted
            bar.close()
            signum = err.signum if isinstance(err, _Stop) else signal.SIGINT
            rows = results.by_key()
            done = sum(i.key in rows for i in selected)
            print(f"interrupted by {signal.Signals(signum).name}: {finished} instance(s) finished in this run, "
                  f"{done} of the {len(selected)} selected are in {out}; run the same command again to resume "
                  "(finished rows are skipped)", file=sys.stderr)
            return 128 + signum
        finally:
            bar.close()
    _print_summary(results, out)
    return 0


def _print_summary(results, out: Path) -> None:
    rows = results.rows()
    counts = Counter(r["result"] for r in rows)
    print(f"{len(rows)} instances in {out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def _parallel(args: argparse.Namespace) -> bool:
    """Whether ``--workers``/``--ray`` ask for Ray (checked: workers >= 1, Ray importable)."""
    from probe.core.cluster import check_reachable, check_workers, import_ray

    check_workers(args.workers)
    if args.ray is None and (args.workers or 1) == 1:
        return False
    import_ray()
    if args.ray is not None:
        check_reachable(args.ray)
    return True


def _verify_batch_parallel(args: argparse.Namespace, todo: list, start: dict, results, root: Path, scale: float,
                           selected: list) -> int:
    """The instances of ``verify-batch`` as Ray tasks (``--workers N`` / ``--ray ADDRESS``): each row is
    written by this process as soon as its task finishes; SIGINT/SIGTERM cancel the outstanding tasks."""
    from probe.core.cluster import run_tasks, session
    from verify.distributed import BatchJob, failure_row, run_batch_job

    out = Path(args.out)
    root = root.resolve()
    jobs = [BatchJob(i.onnx, i.vnnlib, str(root), i.timeout * scale, args.solver) for i in todo]
    done = {"n": 0}

    def write(job: BatchJob, row: dict[str, str]) -> None:
        results.append(row)
        done["n"] += 1

    def still_open(job: BatchJob) -> bool:  # another process may have finished it meanwhile
        return results.by_key().get(job.key) == start.get(job.key)

    state = {"armed": True, "signum": None}
    with _stopping_on_signals(state):
        try:
            with session(args.ray, args.workers) as cluster:
                run_tasks(run_batch_job, jobs, cluster=cluster, on_result=write,
                          on_failure=lambda job, failure: write(job, failure_row(job, failure)),
                          should_run=still_open, timeout_per_task=None if not jobs else
                          2 * max(j.limit for j in jobs) + 60, desc="verify", verbose=not args.quiet)
        except (_Stop, KeyboardInterrupt) as err:
            state["armed"] = False
            signum = err.signum if isinstance(err, _Stop) else getattr(err, "signum", signal.SIGINT)
            rows = results.by_key()
            finished = sum(i.key in rows for i in selected)
            print(f"interrupted by {signal.Signals(signum).name}: {done['n']} instance(s) finished in this run, "
                  f"{finished} of the {len(selected)} selected are in {out}; run the same command again to resume "
                  "(finished rows are skipped)", file=sys.stderr)
            return 128 + signum
    _print_summary(results, out)
    return 0


def _cmd_certify(args: argparse.Namespace) -> int:
    from probe.data import load
    from verify.certify import certify, check_eps, check_seconds, load_network, results_file

    # every argument is checked before the model is loaded or an image runs
    check_eps(args.eps)
    check_seconds("--timeout", args.timeout)
    if args.limit is not None and args.limit < 1:
        raise InvalidParameterError(f"--limit must be a number of images >= 1; got {args.limit}")
    _parallel(args)
    check_output(args.out)
    results_file(args.out).check()
    if args.onnx is not None and not Path(args.onnx).is_file():
        from probe.core.errors import OnnxFileNotFoundError

        raise OnnxFileNotFoundError(f"ONNX file {args.onnx!r} does not exist")
    data = load(args.data, "test", root=args.root)
    network, name = load_network(onnx=args.onnx, model=args.model, input_shape=data.shape, root=args.root)
    report = certify(network, data, args.eps, limit=args.limit, timeout=args.timeout, solver=args.solver,
                     out=args.out, workers=args.workers, address=args.ray, redo_timeouts=args.redo_timeouts,
                     model_name=name, verbose=not args.quiet)
    print(report)
    print(f"per-image rows: {args.out}")
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
    batch.add_argument("--out", required=True,
                       help="results CSV; existing rows are kept and skipped, each new row is written as soon as "
                            "its instance finishes (safe with several runs on one file)")
    batch.add_argument("--solver", default="cbc", choices=SOLVERS)
    batch.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every timeout")
    batch.add_argument("--filter", default=None, help="only instances whose onnx name contains this")
    batch.add_argument("--limit", type=int, default=None, help="only the first N instances")
    batch.add_argument("--redo-timeouts", action="store_true", help="run again the rows whose result is timeout")
    batch.add_argument("--redo-errors", action="store_true", help="run again the rows whose result is error")
    batch.add_argument("--workers", type=int, default=None,
                       help="run N instances at once, as Ray tasks on a local cluster of N CPUs (default: 1, one "
                            "process, no Ray); with --ray, at most N at once (default: every CPU of that cluster)")
    batch.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="join the Ray cluster at HOST:PORT (`ray start --head` there) instead of starting one "
                            "on this machine; the instances' files must exist at the same paths on every machine")
    batch.add_argument("--quiet", action="store_true")
    batch.set_defaults(func=_cmd_verify_batch)

    cert = sub.add_parser("certify", help="certified robust accuracy of a classifier on a test set (clean, PGD, "
                                          "verified) at one or more eps (resumable)")
    which = cert.add_mutually_exclusive_group(required=True)
    which.add_argument("--onnx", default=None, help="an ONNX network")
    which.add_argument("--model", default=None, help="a model of the zoo by name (e.g. mnist-256x2, mnist-mlp)")
    cert.add_argument("--data", required=True, choices=["mnist", "cifar10"], help="the test set (pixels in [0, 1])")
    cert.add_argument("--eps", type=float, nargs="+", required=True, help="L-inf radii, e.g. --eps 0.02 0.05")
    cert.add_argument("--limit", type=int, default=None, help="only the first N test images")
    cert.add_argument("--timeout", type=float, default=60.0, help="seconds per image and eps (attack included)")
    cert.add_argument("--out", required=True,
                      help="results CSV, one row per image and eps, written as images finish; rows already "
                           "there are skipped (run the same command again to resume)")
    cert.add_argument("--solver", default="cbc", choices=SOLVERS)
    cert.add_argument("--workers", type=int, default=None,
                      help="images at once, as Ray tasks on a local cluster of N CPUs (default: 1, one process, no "
                           "Ray); with --ray, at most N at once (default: every CPU of that cluster)")
    cert.add_argument("--ray", default=None, metavar="ADDRESS", help="join the Ray cluster at HOST:PORT")
    cert.add_argument("--redo-timeouts", action="store_true", help="run again the rows whose result is timeout")
    cert.add_argument("--root", default=None, help="the data root (default: $NEUROSPEC_DATA or ../shared/data)")
    cert.add_argument("--quiet", action="store_true")
    cert.set_defaults(func=_cmd_certify)
