"""Reference ReLU models, the subjects of every analysis, with a deterministic train-and-cache helper.

Three models, all taking pixels in [0, 1] (normalisation is the model's first layer, an affine
:class:`Normalize`, so verification works on the raw pixel domain):

=============== ============================================================ ==================
name            architecture                                                 data
=============== ============================================================ ==================
``mnist-mlp``   Normalize, Flatten, 784-256-256-10 with ReLU                 MNIST
``mnist-cnn``   Normalize, Conv(16,4x4,s2)-ReLU-Conv(32,4x4,s2)-ReLU-FC100-FC10 MNIST
``cifar10-cnn`` Normalize, 5 x [Conv3x3-BatchNorm-ReLU] (3 with stride 2), FC128, FC10 CIFAR-10
``cifar10-vgg`` Normalize, VGG-style [Conv3x3-BN-ReLU] 32-M-64-64-M-128-128-M,   CIFAR-10
                FC128, FC10 (M = 2x2 max pooling)
=============== ============================================================ ==================

Training is seeded (weights, shuffling, augmentation), runs on CPU by default, checkpoints after every
epoch (atomically) so an interrupted run resumes, and caches the final weights as safetensors + JSON
(test accuracy, training time, settings) under ``$NEUROSPEC_CACHE`` (default ``~/.cache/neurospec``).

Example:
    >>> from probe.zoo import train_reference
    >>> model = train_reference("mnist-mlp", seed=0)  # doctest: +SKIP
    >>> model.reference_info["test_accuracy"]  # doctest: +SKIP
    0.98...
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from probe.core.artifacts import read_metadata, read_tensors, write_json, write_tensors
from probe.core.errors import ModelError
from probe.core.paths import cache_dir as _cache_dir
from probe.core.training import optimizer_tensors, restore_optimizer

__all__ = [
    "REFERENCE_MODELS",
    "Normalize",
    "TrainSettings",
    "build_reference",
    "evaluate",
    "load_reference",
    "train_reference",
]

logger = logging.getLogger(__name__)


class Normalize(nn.Module):
    """Per-channel affine input normalisation ``(x - mean) / std`` (foldable into the next layer).

    Args:
        mean: per-channel means.
        std: per-channel standard deviations (all > 0).

    Example:
        >>> Normalize((0.5,), (0.25,))(torch.ones(1, 1, 2, 2)).flatten().tolist()
        [2.0, 2.0, 2.0, 2.0]
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ModelError(f"Normalize needs equal-length mean/std with std > 0, got mean={mean}, std={std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _mnist_mlp() -> nn.Sequential:
    return nn.Sequential(
        Normalize((0.1307,), (0.3081,)),
        nn.Flatten(),
        nn.Linear(784, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


def _mnist_cnn() -> nn.Sequential:
    return nn.Sequential(
        Normalize((0.1307,), (0.3081,)),
        nn.Conv2d(1, 16, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


def _conv_bn(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _cifar10_vgg() -> nn.Sequential:
    # VGG-style (conv-BN-ReLU blocks, max pooling) at a width that trains on 2 CPU cores in ~15 min.
    return nn.Sequential(
        Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        *_conv_bn(3, 32, 1),
        nn.MaxPool2d(2),
        *_conv_bn(32, 64, 1),
        *_conv_bn(64, 64, 1),
        nn.MaxPool2d(2),
        *_conv_bn(64, 128, 1),
        *_conv_bn(128, 128, 1),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def _cifar10_cnn() -> nn.Sequential:
    return nn.Sequential(
        Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        *_conv_bn(3, 32, 1),
        *_conv_bn(32, 64, 2),
        *_conv_bn(64, 64, 1),
        *_conv_bn(64, 128, 2),
        *_conv_bn(128, 128, 2),
        nn.Flatten(),
        nn.Linear(128 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


@dataclass(frozen=True)
class TrainSettings:
    """Training settings of a reference model (part of the cache key).

    Attributes:
        dataset: ``"mnist"`` or ``"cifar10"``.
        epochs: passes over the training set.
        batch_size: mini-batch size.
        lr: peak learning rate of SGD with Nesterov momentum 0.9 (linear warm-up, then linear decay).
        weight_decay: L2 penalty.
        label_smoothing: cross-entropy label smoothing.
        augment: random crop (pad 4) and horizontal flip (CIFAR-10 only).
        warmup: share of the steps spent warming up.
        train_subset: use only the first N training images (``None``: all); for quick tests.
    """

    dataset: str
    epochs: int
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = False
    warmup: float = 0.15
    train_subset: int | None = None


REFERENCE_MODELS: dict[str, tuple[Any, TrainSettings]] = {
    "mnist-mlp": (_mnist_mlp, TrainSettings("mnist", epochs=6, batch_size=128, lr=0.05, weight_decay=1e-4)),
    "mnist-cnn": (_mnist_cnn, TrainSettings("mnist", epochs=5, batch_size=128, lr=0.05, weight_decay=1e-4)),
    "cifar10-cnn": (
        _cifar10_cnn,
        TrainSettings(
            "cifar10", epochs=15, batch_size=256, lr=0.2, weight_decay=5e-4, label_smoothing=0.1, augment=True
        ),
    ),
    "cifar10-vgg": (
        _cifar10_vgg,
        TrainSettings(
            "cifar10", epochs=6, batch_size=256, lr=0.2, weight_decay=5e-4, label_smoothing=0.1, augment=True
        ),
    ),
}


def _check_name(name: str) -> None:
    if name not in REFERENCE_MODELS:
        raise ModelError(f"unknown reference model {name!r}; choose one of {sorted(REFERENCE_MODELS)}")


def build_reference(name: str, seed: int = 0) -> nn.Sequential:
    """Build an untrained reference model with seeded initial weights.

    Args:
        name: one of :data:`REFERENCE_MODELS` (``"mnist-mlp"``, ``"mnist-cnn"``, ``"cifar10-cnn"``).
        seed: seed of the initial weights.

    Raises:
        ModelError: unknown name.

    Example:
        >>> build_reference("mnist-mlp")(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    _check_name(name)
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return REFERENCE_MODELS[name][0]()
    finally:
        torch.random.set_rng_state(gen_state)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000,
             device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy of ``model`` on tensors ``x`` (N, ...) and labels ``y`` (N,).

    Example:
        >>> m = build_reference("mnist-mlp")
        >>> 0.0 <= evaluate(m, torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)) <= 1.0
        True
    """
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size].to(device))
        correct += int((out.argmax(1).cpu() == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(x), 1)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel zero padding and random horizontal flip, per sample."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=gen)
    dy = torch.randint(0, 9, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 8)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)


def _lr_at(step: int, total: int, settings: TrainSettings) -> float:
    warm = max(1, int(settings.warmup * total))
    if step < warm:
        return settings.lr * (step + 1) / warm
    return settings.lr * max(0.0, (total - step) / max(1, total - warm))


def _settings_key(name: str, seed: int, settings: TrainSettings) -> str:
    blob = json.dumps({"name": name, "seed": seed, **asdict(settings)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _model_dir(name: str, seed: int, settings: TrainSettings, cache_dir: str | os.PathLike[str] | None) -> Path:
    return _cache_dir(cache_dir) / "models" / f"{name}-seed{seed}-{_settings_key(name, seed, settings)}"






def _load_split(settings: TrainSettings, split: str, root: str | os.PathLike[str] | None):
    from probe import data

    loader = data.load_mnist if settings.dataset == "mnist" else data.load_cifar10
    return loader(split, root=root).tensors()


def train_reference(
    name: str,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    force: bool = False,
    verbose: bool = True,
    epochs: int | None = None,
    train_subset: int | None = None,
) -> nn.Sequential:
    """Train (or load from the cache) a reference model, deterministically for a given seed.

    The result is cached under ``<cache>/models/<name>-seed<seed>-<settings hash>/`` as
    ``model.safetensors`` + ``info.json`` (test accuracy, training seconds, settings, versions). While
    training, a checkpoint is written atomically after every epoch; calling again after an interruption
    resumes from the last finished epoch and gives the same weights as an uninterrupted run.

    Args:
        name: ``"mnist-mlp"``, ``"mnist-cnn"`` or ``"cifar10-cnn"``.
        root: data root (default: ``$NEUROSPEC_DATA`` or ``../shared/data``).
        seed: seed of initial weights, shuffling and augmentation.
        cache_dir: cache folder (default ``$NEUROSPEC_CACHE`` or ``~/.cache/neurospec``).
        device: where to train, e.g. ``"cpu"`` or ``"cuda"``.
        force: retrain even when a cached model exists.
        verbose: show a tqdm progress bar.
        epochs: override the number of epochs (changes the cache key).
        train_subset: train on the first N images only (changes the cache key).

    Returns:
        The trained model in eval mode on ``device``; ``model.reference_info`` holds the JSON metadata.

    Raises:
        ModelError: unknown name or invalid override.
        DataError: the data set is missing or corrupt.

    Example:
        >>> model = train_reference("mnist-mlp", epochs=1, train_subset=2000)  # doctest: +SKIP
    """
    _check_name(name)
    settings = REFERENCE_MODELS[name][1]
    if epochs is not None:
        if epochs < 1:
            raise ModelError(f"epochs must be >= 1, got {epochs}")
        settings = replace(settings, epochs=int(epochs))
    if train_subset is not None:
        if train_subset < 1:
            raise ModelError(f"train_subset must be >= 1, got {train_subset}")
        settings = replace(settings, train_subset=int(train_subset))
    folder = _model_dir(name, seed, settings, cache_dir)
    weights, info_path = folder / "model.safetensors", folder / "info.json"
    if not force and weights.exists() and info_path.exists():
        model = build_reference(name, seed)
        model.load_state_dict(read_tensors(weights))
        model.reference_info = json.loads(info_path.read_text())
        logger.info("loaded cached %s from %s", name, folder)
        return model.to(device).eval()

    from tqdm.auto import tqdm

    x_train, y_train = _load_split(settings, "train", root)
    if settings.train_subset is not None:
        x_train, y_train = x_train[: settings.train_subset], y_train[: settings.train_subset]
    x_test, y_test = _load_split(settings, "test", root)

    model = build_reference(name, seed).to(device)
    # channels_last makes oneDNN convolutions ~30% faster on CPU; it changes no result semantics.
    conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    mem_format = torch.channels_last if conv else torch.contiguous_format
    model = model.to(memory_format=mem_format)
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # biases and BatchNorm scales: no weight decay
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr, momentum=0.9, nesterov=True,
    )
    steps_per_epoch = math.ceil(len(x_train) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    start_epoch, elapsed = 0, 0.0
    # One file holds weights, optimizer state and progress, so a crash can never pair mismatched parts.
    ckpt = folder / "checkpoint.safetensors"
    if ckpt.exists() and not force:
        meta = read_metadata(ckpt)
        tensors = read_tensors(ckpt)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        restore_optimizer(opt, tensors)
        start_epoch, elapsed = int(meta["epoch"]), float(meta["elapsed_s"])
        logger.info("resuming %s from epoch %d", name, start_epoch)

    bar = tqdm(total=total, initial=start_epoch * steps_per_epoch, disable=not verbose, desc=f"train {name}")
    for epoch in range(start_epoch, settings.epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(x_train), generator=gen)
        model.train()
        for i in range(steps_per_epoch):
            idx = order[i * settings.batch_size : (i + 1) * settings.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if settings.augment:
                xb = _augment(xb, gen)
            lr = _lr_at(epoch * steps_per_epoch + i, total, settings)
            for group in opt.param_groups:
                group["lr"] = lr
            xb = xb.to(device).contiguous(memory_format=mem_format)
            loss = F.cross_entropy(model(xb), yb.to(device), label_smoothing=settings.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
        elapsed += time.perf_counter() - t0
        ckpt_tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        ckpt_tensors.update(optimizer_tensors(opt))
        write_tensors(ckpt, ckpt_tensors, metadata={"epoch": str(epoch + 1), "elapsed_s": repr(elapsed)})
    bar.close()

    model = model.to(memory_format=torch.contiguous_format).eval()
    info = {
        "name": name,
        "seed": seed,
        "settings": asdict(settings),
        "test_accuracy": evaluate(model, x_test, y_test, device=device),
        "train_seconds": round(elapsed, 2),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }
    write_tensors(weights, model.state_dict())
    write_json(info_path, info)
    ckpt.unlink(missing_ok=True)
    model.reference_info = json.loads(info_path.read_text())
    logger.info("%s: test accuracy %.4f after %.1f s", name, info["test_accuracy"], elapsed)
    return model


def load_reference(
    name: str, seed: int = 0, *, cache_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Sequential:
    """Load a cached reference model trained with the default settings.

    Raises:
        ModelError: unknown name, or the model was never trained (the message says how to train it).

    Example:
        >>> model = load_reference("mnist-mlp")  # doctest: +SKIP
    """
    _check_name(name)
    folder = _model_dir(name, seed, REFERENCE_MODELS[name][1], cache_dir)
    if not (folder / "model.safetensors").exists():
        raise ModelError(
            f"reference model {name!r} (seed {seed}) is not in the cache {folder}; train it with "
            f"probe.zoo.train_reference({name!r}, seed={seed}) or `neurospec train {name}`"
        )
    return train_reference(name, seed=seed, cache_dir=cache_dir, device=device, verbose=False)
