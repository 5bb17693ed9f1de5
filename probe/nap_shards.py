"""NAP mining over shards of a data set, in parallel on Ray: ``mine_sharded(model, dataset, shards=8)``.

:func:`probe.nap.mine` only adds up per-neuron activation counts and per-class sample counts, so mining each
shard on its own (one Ray task per shard, :func:`probe.core.cluster.run_tasks`) and summing the integer counts
gives exactly the :class:`~probe.nap.NAPSet` one process gets. Shards are runs of whole batches of
:func:`probe.data.make_loader` (``batch_size``), so every forward pass sees the same batch as in one process
and the result is bit-identical to ``mine(model, make_loader(dataset, batch_size), ...)``.

Example:
    >>> from probe import data, zoo
    >>> from probe.nap_shards import mine_sharded
    >>> model = zoo.load("mnist-mlp")                                              # doctest: +SKIP
    >>> naps = mine_sharded(model, data.load_mnist("train"), shards=8, workers=2)  # doctest: +SKIP
    >>> naps == probe.nap.mine(model, data.make_loader(data.load_mnist("train")))  # doctest: +SKIP
    True
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from probe.core.cluster import run_tasks, session
from probe.core.errors import DataError, InvalidParameterError, ModelError
from probe.core.validate import check_int
from probe.nap import NAPSet, check_delta, mine

__all__ = ["ShardCounts", "count_shard", "mine_sharded", "shard_ranges"]

logger = logging.getLogger(__name__)


@dataclass
class ShardCounts:
    """What one shard contributes: per-layer activation counts ``(classes, neurons)`` (int64), per-class
    counted samples, the layers' per-sample shapes and the model's ReLU layer names."""

    counts: dict[str, torch.Tensor]
    n_samples: torch.Tensor
    shapes: dict[str, tuple[int, ...]]
    layers: list[str]
    model_relus: list[str] | None


def shard_ranges(n_items: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """Split ``n_items`` into at most ``shards`` contiguous ``(start, stop)`` ranges of whole batches.

    Example:
        >>> shard_ranges(10, 3, 2)
        [(0, 6), (6, 10)]
    """
    n_batches = math.ceil(n_items / batch_size)
    shards = max(1, min(shards, n_batches))
    bounds = [round(k * n_batches / shards) for k in range(shards + 1)]
    return [(a * batch_size, min(b * batch_size, n_items)) for a, b in itertools.pairwise(bounds) if b > a]


def _batches(dataset: Any, start: int, stop: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for i in range(start, stop, batch_size):
        x, y = dataset[list(range(i, min(i + batch_size, stop)))]
        yield x, torch.as_tensor(y)


def count_shard(span: tuple[int, int], model: nn.Module, dataset: Any, batch_size: int, layers: list[str] | None,
                only_correct: bool, device: str | None) -> ShardCounts:
    """Mine the items ``span = (start, stop)`` of ``dataset`` (a task of :func:`mine_sharded`) and return
    their counts."""
    quiet = logging.getLogger("probe.nap")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "class c has no sample" is said once, for the whole data set
    try:
        naps = mine(model, _batches(dataset, span[0], span[1], batch_size), delta=1.0, layers=layers,
                    only_correct=only_correct, device=device, verbose=False)
    finally:
        quiet.setLevel(level)
    return ShardCounts({k: naps.counts[k] for k in naps.layers}, naps.n_samples, dict(naps.shapes),
                       list(naps.layers), naps.model_relus)


def mine_sharded(model: nn.Module, dataset: Any, shards: int, *, delta: float = 0.99,
                 layers: Sequence[str] | None = None, only_correct: bool = True, batch_size: int = 256,
                 class_names: list[str] | None = None, source: dict[str, Any] | None = None,
                 workers: int | None = None, address: str | None = None, device: str | None = None,
                 verbose: bool = True) -> NAPSet:
    """Mine the NAPs of ``model`` over ``dataset`` in ``shards`` parts, one Ray task each, and sum the counts.

    Args:
        model: as for :func:`probe.nap.mine`.
        dataset: a data set whose ``dataset[list_of_indices]`` is a batch ``(x, y)``, e.g. a
            :class:`probe.data.ImageDataset` (what :func:`probe.data.make_loader` takes).
        shards: how many parts (at most one per batch).
        delta, layers, only_correct, class_names: as for :func:`probe.nap.mine`.
        batch_size: items per forward pass (the result equals ``mine`` over ``make_loader(dataset, batch_size)``).
        source: stored in the result (:attr:`NAPSet.source`).
        workers, address: :func:`probe.core.cluster.session`: ``address`` joins a Ray cluster, else a local
            one with ``workers`` CPUs is started; ``workers`` 1 or ``None`` and no address: the shards run here,
            one after another.
        device: where each task runs the model (default: the model's device).
        verbose: progress bar over the shards.

    Returns:
        The :class:`NAPSet`, equal to :func:`probe.nap.mine`'s on the same data.

    Raises:
        InvalidParameterError: ``shards`` or ``batch_size`` < 1, or delta outside (0.5, 1].
        DataError: an empty data set. ModelError, DataError: as :func:`probe.nap.mine` (raised by the task).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from probe.data import ImageDataset
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
        >>> ds = ImageDataset(torch.rand(50, 1, 2, 2), torch.randint(0, 2, (50,)), ["a", "b"], name="toy", split="x")
        >>> mine_sharded(net, ds, shards=3, batch_size=8, verbose=False).num_classes
        2
    """
    check_delta(delta)
    shards = check_int("shards", shards, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise InvalidParameterError(f"dataset must be indexable with a list of indices, e.g. a probe.data.ImageDataset;"
                                    f" got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise DataError("the data set is empty; pass a non-empty data set")
    spans = shard_ranges(len(dataset), batch_size, shards)
    parts: dict[tuple[int, int], ShardCounts] = {}
    with session(address, workers) as cluster:
        run_tasks(count_shard, spans, args=(model, dataset, batch_size, None if layers is None else list(layers),
                                            only_correct, device),
                  cluster=cluster, on_result=parts.__setitem__, desc="mine NAPs (shards)", verbose=verbose)
    first = parts[spans[0]]
    counts = {k: torch.zeros_like(first.counts[k]) for k in first.layers}
    n_samples = torch.zeros_like(first.n_samples)
    for span in spans:  # integer sums: the order does not change the result
        part = parts[span]
        if part.layers != first.layers or part.n_samples.shape != first.n_samples.shape:
            raise ModelError("the shards were mined on different layers or classes; the model must not change "
                             "while mining")
        for k in first.layers:
            counts[k] += part.counts[k]
        n_samples += part.n_samples
    naps = NAPSet(float(delta), list(first.layers), dict(first.shapes), counts, n_samples, only_correct,
                  class_names, source, first.model_relus)
    for c in naps.empty_classes:
        logger.warning("class %d has no %s sample: its NAP is empty", c, "correctly predicted" if only_correct else "")
    logger.info("mined NAPs over %d shards of %d items", len(spans), len(dataset))
    return naps
