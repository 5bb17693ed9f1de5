"""Pieces shared by the training loops (reference models, TokFSM transformers, codebooks): the learning-rate
schedule and the optimizer state as plain tensors (so checkpoints are safetensors, never pickles).

Example:
    >>> round(lr_factor(0, steps=100, warmup=10), 3), lr_factor(10, steps=100, warmup=10)
    (0.1, 1.0)
    >>> round(lr_factor(100, steps=100, warmup=10, min_ratio=0.05), 3)
    0.05
"""

from __future__ import annotations

import math
from typing import Literal

import torch

__all__ = ["lr_factor", "optimizer_tensors", "restore_optimizer"]


def lr_factor(step: int, steps: int, warmup: int, schedule: Literal["cosine", "constant"] = "cosine",
              min_ratio: float = 0.0) -> float:
    """The learning-rate multiplier at ``step`` (0-based) of ``steps``: linear warm-up over ``warmup`` steps,
    then constant or a cosine decay from 1 to ``min_ratio`` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state tensors as ``{"opt.<index>.<field>": tensor}``."""
    out = {}
    for idx, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                out[f"opt.{idx}.{key}"] = value
    return out


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Load the state written by :func:`optimizer_tensors` (other keys in ``tensors`` are ignored)."""
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, field = key.split(".", 2)
            state.setdefault(int(idx), {})[field] = value
    sd["state"] = state
    opt.load_state_dict(sd)
