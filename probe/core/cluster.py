"""Independent work in parallel on a Ray cluster: one task per item, each result handed back as it finishes.

Nothing here knows what the work is. Two functions carry it:

- :func:`connect` (or the context manager :func:`session`) starts an embedded local cluster
  (``address=None``: ``num_cpus=workers or os.cpu_count()``) or joins a running one (``address="HEAD:6379"``,
  started with ``ray start --head`` on the head machine and ``ray start --address=HEAD:6379`` on the
  others). An address that does not answer fails within ``timeout`` seconds
  (:class:`~probe.core.errors.ClusterUnreachableError`); without the ``ray`` package the error
  (:class:`~probe.core.errors.RayNotInstalledError`) says ``pip install ray``.
- :func:`run_tasks` submits ``fn(item, *args)`` as one Ray task per item (1 CPU each, ``num_gpus`` when
  asked), at most as many at once as the cluster has slots, and calls ``on_result(item, result)`` **in the
  driver** as soon as a task finishes (``ray.wait``), so the caller writes each result at once and exactly
  once. A progress bar shows finished / running / queued tasks. A task whose worker process dies is run
  again (Ray's ``max_retries``); a task that runs past ``timeout_per_task`` is stopped. On SIGINT/SIGTERM the
  outstanding tasks are stopped (by leaving the cluster when this process made the connection, else by
  cancelling them) and the signal is passed on (its previous handler runs, else :class:`Interrupted` is
  raised): every result handed to ``on_result`` before then is already written.

``session(None, workers=1)`` yields ``None`` and :func:`run_tasks` then runs the items one after another in
this process, without importing Ray: the single-process path stays what it was.

Large shared inputs (a network, a data set) go in ``args``: they are put into Ray's object store once and
every task receives them, instead of being pickled with each task. On several machines every path the tasks
read must exist on each of them (a shared file system), and the driver alone writes results.

Example:
    >>> results = {}
    >>> with session(address=None, workers=1) as cluster:          # one process, Ray not started
    ...     stats = run_tasks(pow, [1, 2, 3], args=(2,), cluster=cluster, verbose=False,
    ...                       on_result=lambda item, value: results.__setitem__(item, value))
    >>> results, stats.finished
    ({1: 1, 2: 4, 3: 9}, 3)
    >>> with session(address=None, workers=2) as cluster:          # doctest: +SKIP
    ...     run_tasks(pow, range(100), args=(2,), cluster=cluster, on_result=print)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from probe.core.errors import (
    ClusterError,
    ClusterUnreachableError,
    InvalidParameterError,
    RayNotInstalledError,
    TaskFailedError,
)

__all__ = ["DEFAULT_PORT", "Cluster", "Interrupted", "RunStats", "TaskFailure", "check_reachable", "check_workers",
           "connect", "import_ray", "run_tasks", "session"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: The port of a Ray head's GCS when ``ray start --head`` is not told another one.
DEFAULT_PORT = 6379
#: How long a cancelled task gets to stop on its KeyboardInterrupt before its worker is killed.
CANCEL_GRACE_S = 5.0
#: How long :func:`run_tasks` blocks in one ``ray.wait`` (signals and time limits are looked at in between).
_POLL_S = 0.2


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped :func:`run_tasks` (raised when the signal had no Python handler of its own
    to pass it on to). ``signum`` is the signal's number; outstanding tasks were cancelled."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass(frozen=True)
class TaskFailure:
    """Why a task gave no result: ``kind`` is ``"timeout"`` (it ran past ``timeout_per_task`` and was stopped)
    or ``"died"`` (its worker process died on every try); ``tries`` counts the runs Ray made."""

    kind: Literal["timeout", "died"]
    message: str
    tries: int = 1


@dataclass
class RunStats:
    """What :func:`run_tasks` did: results handed on, failures recorded, items skipped (``should_run``
    said no), wall-clock seconds, and whether Ray ran them."""

    finished: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    on_ray: bool = False


@dataclass
class Cluster:
    """A connection to a Ray cluster, made by :func:`connect`.

    Attributes:
        address: the GCS address of the cluster (``host:port``).
        started: whether :func:`connect` started this (embedded, local) cluster.
        owns_connection: whether :meth:`close` disconnects (False when Ray was already initialised).
        cpus, gpus: the cluster's resources when it was joined.
        workers: at most this many tasks at once (``None``: as many as the cluster has CPUs).
    """

    address: str
    started: bool
    owns_connection: bool
    cpus: int
    gpus: int
    workers: int | None = None

    def slots(self, num_gpus: float = 0) -> int:
        """How many tasks of 1 CPU (and ``num_gpus`` GPUs) run at once."""
        n = self.cpus
        if num_gpus > 0:
            n = min(n, math.floor(self.gpus / num_gpus))
        if self.workers is not None:
            n = min(n, self.workers)
        return max(1, n)

    def close(self) -> None:
        """Disconnect (and stop the cluster if :func:`connect` started it); a no-op when Ray was initialised
        before :func:`connect` was called."""
        if self.owns_connection:
            ray = import_ray()
            if ray.is_initialized():
                ray.shutdown()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        RayNotInstalledError: it cannot be imported (the message says ``pip install ray``).
    """
    try:
        import ray
    except ImportError as err:
        raise RayNotInstalledError(
            f"parallel work (--workers > 1 or --ray) needs the Ray package, which cannot be imported ({err}); "
            "install it with `pip install ray` (or `pip install neurospec`, which depends on it), "
            "or run with --workers 1") from err
    return ray


def check_workers(workers: int | None) -> int | None:
    """``workers`` checked: ``None`` or an int >= 1 (raises :class:`InvalidParameterError`)."""
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidParameterError(f"workers must be a whole number >= 1 (1: one process, no Ray); got {workers!r}")
    return workers


def _host_port(address: str) -> tuple[str, int]:
    """``host:port`` (or ``ray://host:port``, or a bare host on :data:`DEFAULT_PORT`) as a pair."""
    rest = address.split("://", 1)[1] if "://" in address else address
    if rest.startswith("["):  # [ipv6]:port
        host, _, port = rest[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, sep, port = rest.rpartition(":")
        if not sep:
            host, port = rest, ""
    if not host:
        raise InvalidParameterError(f"the Ray address must be HOST:PORT (e.g. 10.0.0.1:{DEFAULT_PORT}); got {address!r}")
    if not port:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidParameterError(f"the Ray address {address!r} has no valid port; write HOST:PORT, "
                                    f"e.g. {host}:{DEFAULT_PORT}")
    return host, int(port)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Check that something answers at a Ray address (``HOST:PORT``, ``ray://HOST:PORT``; ``"auto"`` is not
    checked) within ``timeout`` seconds, before any work starts.

    Raises:
        ClusterUnreachableError: nothing answers (the message says how to start a head node).
        InvalidParameterError: a malformed address.

    Example:
        >>> check_reachable("127.0.0.1:1", timeout=1)
        Traceback (most recent call last):
        ...
        probe.core.errors.ClusterUnreachableError: the Ray cluster at '127.0.0.1:1' does not answer ...
    """
    if address == "auto":
        return
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        why = "no answer" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise ClusterUnreachableError(
            f"the Ray cluster at {address!r} does not answer ({why} within {timeout:g} s at {host}:{port}); "
            f"start it with `ray start --head --port={port}` on the head machine and pass its address, "
            "or leave out the address to run on this machine") from err


def connect(address: str | None = None, workers: int | None = None, *, timeout: float = 5.0,
            log_to_driver: bool = False) -> Cluster:
    """Start an embedded local Ray cluster, or join a running one.

    Args:
        address: ``None`` starts a local cluster in this process's session (stopped by
            :meth:`Cluster.close`); ``"HOST:PORT"`` (or ``"ray://HOST:PORT"``) joins the cluster of
            ``ray start --head`` there; ``"auto"`` joins the cluster started on this machine.
        workers: for a local cluster its CPUs (default ``os.cpu_count()``); when joining, the most tasks
            run at once (default: every CPU of the cluster).
        timeout: seconds to wait for an address to answer.
        log_to_driver: show the workers' output in this process.

    Returns:
        The :class:`Cluster`. If Ray is already initialised in this process (e.g. by the caller's own
        ``ray.init``), that connection is used and left open by :meth:`Cluster.close`.

    Raises:
        RayNotInstalledError: Ray cannot be imported.
        ClusterUnreachableError: nothing answers at ``address`` within ``timeout`` seconds.
        ClusterError: Ray fails to start or to join.
        InvalidParameterError: a malformed address, or ``workers`` < 1.

    Example:
        >>> cluster = connect(None, workers=2)             # doctest: +SKIP
        >>> cluster.slots()                                # doctest: +SKIP
        2
        >>> cluster.close()                                # doctest: +SKIP
    """
    workers = check_workers(workers)
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise InvalidParameterError(f"timeout must be a positive number of seconds; got {timeout!r}")
    if address is not None:
        if not isinstance(address, str) or not address.strip():
            raise InvalidParameterError(f"the Ray address must be HOST:PORT; got {address!r}")
        address = address.strip()
    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (None, "auto") and _host_port(address) != _host_port(current):
            raise ClusterError(f"this process is already connected to the Ray cluster at {current}; "
                               f"call ray.shutdown() before joining {address}")
        return _cluster(ray, current, started=False, owns=False, workers=workers)
    if address not in (None, "auto"):
        check_reachable(address, timeout)
    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        if address is None:
            ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                     log_to_driver=log_to_driver, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=log_to_driver, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        where = "start a local Ray cluster" if address is None else f"join the Ray cluster at {address!r}"
        raise ClusterError(f"could not {where}: {err}") from err
    finally:
        if previous is not None:  # ray.init installs its own SIGTERM handler; the caller's stays in charge
            signal.signal(signal.SIGTERM, previous)
    gcs = ray.get_runtime_context().gcs_address
    cluster = _cluster(ray, gcs, started=address is None, owns=True, workers=None if address is None else workers)
    logger.info("%s Ray cluster at %s: %d CPUs, %d GPUs", "started a local" if cluster.started else "joined the",
                gcs, cluster.cpus, cluster.gpus)
    return cluster


def _cluster(ray: Any, address: str, started: bool, owns: bool, workers: int | None) -> Cluster:
    resources = ray.cluster_resources()
    return Cluster(address=address, started=started, owns_connection=owns, cpus=int(resources.get("CPU", 0)),
                   gpus=int(resources.get("GPU", 0)), workers=workers)


@contextlib.contextmanager
def session(address: str | None = None, workers: int | None = None, *,
            timeout: float = 5.0) -> Iterator[Cluster | None]:
    """A :class:`Cluster` for the block (closed after it), or ``None`` when the work stays in this process
    (no ``address`` and ``workers`` 1 or ``None``: Ray is not imported).

    Example:
        >>> with session(None, workers=1) as cluster:
        ...     cluster is None
        True
    """
    workers = check_workers(workers)
    if address is None and (workers or 1) == 1:
        yield None
        return
    cluster = connect(address, workers, timeout=timeout)
    try:
        yield cluster
    finally:
        cluster.close()


def _call(fn: Callable[..., Any], item: Any, *args: Any) -> Any:
    """The body of every task: ``fn(item, *args)``."""
    return fn(item, *args)


@contextlib.contextmanager
def _signal_guard(state: dict[str, Any]) -> Iterator[None]:
    """While the block runs, SIGINT/SIGTERM are noted in ``state["signum"]`` and, while ``state["armed"]``,
    raise :class:`Interrupted` at once; ``state["previous"]`` keeps the handlers they replaced."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        state["signum"] = signum
        if state["armed"]:
            raise Interrupted(signum)

    state["previous"] = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in state["previous"].items():
            signal.signal(s, h)


def _pass_on(signum: int, previous: Any) -> None:
    """Hand a signal to the handler it had before :func:`run_tasks` (which usually raises), else raise
    :class:`Interrupted`."""
    if callable(previous):
        previous(signum, None)
    raise Interrupted(signum)


def run_tasks(fn: Callable[..., R], items: Sequence[T], *, on_result: Callable[[T, R], None],
              cluster: Cluster | None = None, args: Sequence[Any] = (),
              on_failure: Callable[[T, TaskFailure], None] | None = None,
              should_run: Callable[[T], bool] | None = None, timeout_per_task: float | None = None,
              max_retries: int = 3, num_gpus: float = 0, desc: str = "tasks", verbose: bool = True) -> RunStats:
    """Run ``fn(item, *args)`` for every item, one Ray task each, and hand each result to ``on_result`` as
    soon as it is there.

    Args:
        fn: a function Ray can pickle (module-level functions are sent by reference: the workers must be able
            to import their module). It should catch the errors that belong to one item and return them as a
            result; any other exception stops the run (outstanding tasks are cancelled) and is raised here.
        items: the work, one task per item (in this order).
        on_result: called in this process, in the order tasks finish, with the item and ``fn``'s result.
        cluster: from :func:`connect`/:func:`session`; ``None`` runs everything here, one item after another.
        args: passed to every call after the item; on Ray each is put into the object store once.
        on_failure: called with the item and a :class:`TaskFailure` when a task ran past
            ``timeout_per_task`` or its worker died on every try; ``None``: such a failure raises
            :class:`TaskFailedError`.
        should_run: asked right before an item is submitted (e.g. "has another run finished it meanwhile?");
            False skips it.
        timeout_per_task: seconds a task may run (counted from its submission, tries included) before it is
            cancelled and reported as a ``"timeout"`` failure; ``None``: no limit. Not enforced without Ray.
        max_retries: how often a task whose worker process died is run again.
        num_gpus: GPUs each task takes (e.g. 1).
        desc: the progress bar's label.
        verbose: show the progress bar.

    Returns:
        :class:`RunStats`.

    Raises:
        TaskFailedError: a task failed and ``on_failure`` is ``None``.
        Interrupted: SIGINT/SIGTERM (when the signal had no other Python handler to pass it to). The
            outstanding tasks were stopped first; a ``cluster`` whose connection this process made
            (``owns_connection``) was closed to stop them.
        Exception: whatever ``fn`` or a callback raised.

    Example:
        >>> seen = []
        >>> run_tasks(abs, [-1, 2], on_result=lambda item, value: seen.append(value), verbose=False).finished
        2
        >>> seen
        [1, 2]
    """
    if not callable(fn) or not callable(on_result):
        raise InvalidParameterError("fn and on_result must be callables")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise InvalidParameterError(f"max_retries must be an int >= 0; got {max_retries!r}")
    if timeout_per_task is not None and not (isinstance(timeout_per_task, (int, float)) and timeout_per_task > 0):
        raise InvalidParameterError(f"timeout_per_task must be a positive number of seconds or None; got {timeout_per_task!r}")
    if not (isinstance(num_gpus, (int, float)) and num_gpus >= 0):
        raise InvalidParameterError(f"num_gpus must be >= 0; got {num_gpus!r}")
    items = list(items)
    if cluster is None:
        return _run_here(fn, items, on_result, args, should_run, desc, verbose)
    return _run_on_ray(fn, items, on_result, cluster, args, on_failure, should_run, timeout_per_task,
                       max_retries, num_gpus, desc, verbose)


def _run_here(fn: Callable[..., Any], items: list[Any], on_result: Callable[[Any, Any], None],
              args: Sequence[Any], should_run: Callable[[Any], bool] | None, desc: str, verbose: bool) -> RunStats:
    from tqdm.auto import tqdm

    stats = RunStats()
    t0 = time.perf_counter()
    with tqdm(total=len(items), desc=desc, disable=not verbose) as bar:
        for item in items:
            if should_run is not None and not should_run(item):
                stats.skipped += 1
            else:
                on_result(item, fn(item, *args))
                stats.finished += 1
            bar.update()
    stats.seconds = time.perf_counter() - t0
    return stats


def _run_on_ray(fn: Callable[..., Any], items: list[Any], on_result: Callable[[Any, Any], None], cluster: Cluster,
                args: Sequence[Any], on_failure: Callable[[Any, TaskFailure], None] | None,
                should_run: Callable[[Any], bool] | None, timeout_per_task: float | None, max_retries: int,
                num_gpus: float, desc: str, verbose: bool) -> RunStats:
    from tqdm.auto import tqdm

    ray = import_ray()
    from ray.exceptions import RayError, RayTaskError

    stats = RunStats(on_ray=True)
    t0 = time.perf_counter()
    remote = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=max_retries, retry_exceptions=False)(_call)
    fn_ref = ray.put(fn)
    arg_refs = [ray.put(a) for a in args]
    slots = cluster.slots(num_gpus)
    queue: deque[Any] = deque(items)
    running: dict[Any, tuple[Any, float]] = {}  # ref -> (item, submitted at)
    # signals raise at once only while this process waits in ray.wait; elsewhere (submitting, writing a
    # result) they are noted and acted on at the next safe point, so no finished result is half-written
    state: dict[str, Any] = {"armed": False, "signum": None, "previous": {}}
    bar = tqdm(total=len(items), desc=desc, disable=not verbose)
    shown = (-1, -1)  # (running, queued) last shown on the bar

    def fail(item: Any, failure: TaskFailure) -> None:
        if on_failure is None:
            raise TaskFailedError(f"the task for {item!r} failed: {failure.message}")
        on_failure(item, failure)
        stats.failed += 1

    def stop_if_signalled() -> None:
        if state["signum"] is not None:
            raise Interrupted(state["signum"])

    try:
        with _signal_guard(state):
            try:
                while queue or running:
                    while queue and len(running) < slots:
                        item = queue.popleft()
                        if should_run is not None and not should_run(item):
                            stats.skipped += 1
                            bar.update()
                            continue
                        running[remote.remote(fn_ref, item, *arg_refs)] = (item, time.monotonic())
                    stop_if_signalled()
                    if (len(running), len(queue)) != shown:
                        shown = (len(running), len(queue))
                        bar.set_postfix(running=shown[0], queued=shown[1])
                    if not running:
                        continue
                    state["armed"] = True
                    try:
                        ready, _ = ray.wait(list(running), num_returns=1, timeout=_POLL_S)
                    finally:
                        state["armed"] = False
                    for ref in ready:
                        item, _ = running.pop(ref)
                        try:
                            value = ray.get(ref)
                        except RayTaskError as err:  # fn raised: stop everything, raise its exception
                            cause = getattr(err, "cause", None)
                            if isinstance(cause, Exception):
                                raise cause from err
                            raise
                        except RayError as err:  # the worker died on every try (or its node went away)
                            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                            fail(item, TaskFailure("died", f"its worker process died ({type(err).__name__}: "
                                                           f"{first})", tries=max_retries + 1))
                        else:
                            on_result(item, value)
                            stats.finished += 1
                        bar.update()
                    if timeout_per_task is not None:
                        now = time.monotonic()
                        for ref, (item, since) in list(running.items()):
                            if now - since > timeout_per_task:
                                del running[ref]
                                _cancel(ray, [ref])
                                fail(item, TaskFailure("timeout", f"it ran past its limit of {timeout_per_task:g} s "
                                                                  "and was stopped"))
                                bar.update()
                    stop_if_signalled()
            except KeyboardInterrupt as err:
                # Ray turns an exception raised by a signal handler inside ray.wait into a plain
                # KeyboardInterrupt: the signal's number is in state["signum"]
                signum = getattr(err, "signum", None) or state["signum"] or signal.SIGINT
                if cluster.owns_connection:
                    # leaving the cluster stops every task this process owns; cancelling them one by one
                    # raced with their replies and could abort this process inside Ray (see _cancel)
                    cluster.close()
                else:
                    _cancel(ray, list(running))
                running.clear()
                bar.close()
                logger.info("interrupted by %s: stopped the outstanding tasks (%d not started)",
                            signal.Signals(signum).name, len(queue))
                _pass_on(signum, state["previous"].get(signum))
    finally:
        if running:  # an exception from fn or a callback: leave nothing running
            _cancel(ray, list(running))
        bar.close()
    stats.seconds = time.perf_counter() - t0
    return stats


def _cancel(ray: Any, refs: list[Any], grace: float = CANCEL_GRACE_S) -> None:
    """Stop the tasks of ``refs``: first by raising KeyboardInterrupt in each (a task that is finishing
    finishes normally), then, after ``grace`` seconds, by killing the worker of any that still runs.

    Killing at once raced with a task's own reply: a reply that arrived after the kill had already failed
    the task aborted this process inside Ray's core worker ("Tried to complete task that was not pending").
    """
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=False)
    left = list(refs)
    with contextlib.suppress(Exception):
        _, left = ray.wait(left, num_returns=len(left), timeout=grace)
    for ref in left:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)
