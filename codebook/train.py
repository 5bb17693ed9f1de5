"""Training codebooks (and fine-tuning the model jointly): :func:`init_codebooks`, :func:`train`,
:func:`codebook_metrics`.

Loss per step: ``task_loss(model, batch) + sum over codebooks of their codebook loss``
(``recon_coef * MSE(codes, stop-grad(input)) + commitment * MSE(input, stop-grad(codes))``). The task loss
reaches the selected codes and, straight through, the model. AdamW with two parameter groups: the codebooks
(``lr_codebook``, no weight decay) and the model (``lr_model``; ``freeze_model=True`` keeps it fixed).

The loop never synchronises with the host inside a step: losses are accumulated on the device, a NaN/inf flag
is accumulated on the device, dead-code replacement is branch-free. Every ``check_every`` steps the loop
reads the flag and the losses once (for the progress bar and history); a NaN/inf loss or activation stops
training with :class:`~codebook.errors.NonFiniteActivationError`. Checkpoints are only written right after
such a check passed, so the checkpoint on disk is always the last good state.

Example:
    >>> cbs = attach(model, site_names(model), CodebookConfig(n_codes=1024))     # doctest: +SKIP
    >>> init_codebooks(model, cbs, [fsm.sample(256, seed=1)])                     # doctest: +SKIP
    >>> result = train(model, cbs, lambda step: fsm.sample(128, seed=step), TrainConfig(steps=500),
    ...                loss_fn=lm_loss)                                            # doctest: +SKIP
    >>> result.metrics["blocks.0.hook_mlp_out"].dead_fraction                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codebook.attach import Codebooks
from codebook.errors import CheckpointMismatchError, CodebookConfigError, NonFiniteActivationError
from codebook.io import (
    codebooks_state,
    dataclass_from_dict,
    load_codebooks_state,
    model_fingerprint,
    read_json,
)
from probe.core.artifacts import read_tensors, stamp, write_json, write_tensors
from probe.core.training import lr_factor

__all__ = ["CodebookMetrics", "TrainConfig", "TrainResult", "codebook_metrics", "init_codebooks",
           "next_token_loss", "train"]

logger = logging.getLogger(__name__)

Batches = Callable[[int], torch.Tensor] | Sequence[torch.Tensor]


def next_token_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``model(tokens)`` (the default task loss)."""
    logits = model(tokens)
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def _batch(data: Batches, step: int) -> torch.Tensor:
    if callable(data):
        return data(step)
    return data[step % len(data)]


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def init_codebooks(model: nn.Module, cbs: Codebooks, batches: Iterable[torch.Tensor], *, seed: int = 0,
                   iters: int | None = None, verbose: bool = False) -> None:
    """k-means initialisation of every codebook from real activations (grouped codebooks: per head, batched).

    The codebooks are switched off (pass-through) while the activations are collected from ``batches``, then
    each layer runs :meth:`~codebook.layer.CodebookLayer.kmeans_init` on at most ``config.kmeans_samples``
    randomly chosen activations.

    Args:
        model: the model the codebooks are attached to.
        cbs: the attached codebooks.
        batches: token batches (e.g. ``[fsm.sample(512, seed=1)]``).
        seed: seed of sub-sampling and of the initial centroids.
        iters: Lloyd iterations (default: each layer's ``config.kmeans_iters``).
        verbose: progress bar over layers.

    Raises:
        CodebookConfigError: the collected activations are not finite.

    Example:
        >>> init_codebooks(model, cbs, [tokens])   # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    layers = [layer for _, layer in cbs.items()]
    device = _device_of(model)
    was_training = model.training
    model.eval()
    for layer in layers:
        layer.enabled, layer.record_inputs, layer.recorded = False, True, []
    try:
        for tokens in batches:
            model(tokens.to(device))
    finally:
        for layer in layers:
            layer.enabled, layer.record_inputs = True, False
        model.train(was_training)
    gen = torch.Generator().manual_seed(seed)
    for i, (_site, layer) in enumerate(tqdm(cbs.items(), desc="k-means init", disable=not verbose)):
        x = torch.cat(layer.recorded)
        layer.recorded = []
        if layer.norm is not None:
            x = layer.norm(x)
        if x.shape[0] > layer.config.kmeans_samples:
            x = x[torch.randperm(x.shape[0], generator=gen)[: layer.config.kmeans_samples].to(x.device)]
        layer.kmeans_init(x, iters=iters, seed=seed + i)
        layer._last_input = x


@dataclass
class TrainConfig:
    """Settings of :func:`train` (JSON round-trip via ``asdict``).

    Args:
        steps: optimizer steps in total (a resumed run continues up to this number).
        lr_codebook: AdamW learning rate of the codebooks.
        lr_model: AdamW learning rate of the model (ignored when ``freeze_model``).
        freeze_model: keep the model's own weights fixed.
        weight_decay: AdamW weight decay of the model's weights (codebooks get none).
        warmup_steps: linear learning-rate warm-up.
        lr_schedule: ``"constant"`` or ``"cosine"`` (decay to ``min_lr_ratio`` of the rate after warm-up).
        min_lr_ratio: final learning-rate factor of the cosine schedule.
        grad_clip: clip the global gradient norm (``None``: no clipping).
        check_every: steps between host reads (NaN check, progress, history).
        checkpoint_every: steps between checkpoints (0: only at the end, when a directory is given).
        seed: seed of the dead-code re-seeding.
    """

    steps: int = 1000
    lr_codebook: float = 1e-3
    lr_model: float = 1e-4
    freeze_model: bool = False
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    check_every: int = 50
    checkpoint_every: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "check_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise CodebookConfigError(f"TrainConfig.{name} must be a positive int; got {v!r}")
        for name in ("warmup_steps", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise CodebookConfigError(f"TrainConfig.{name} must be an int >= 0; got {v!r}")
        for name in ("lr_codebook", "lr_model", "weight_decay"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise CodebookConfigError(f"TrainConfig.{name} must be a finite number >= 0; got {v!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise CodebookConfigError(f"TrainConfig.lr_schedule must be 'constant' or 'cosine'; got {self.lr_schedule!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise CodebookConfigError(f"TrainConfig.min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio!r}")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            raise CodebookConfigError(f"TrainConfig.grad_clip must be None or > 0; got {self.grad_clip!r}")


@dataclass
class CodebookMetrics:
    """Per-codebook measures on a data set (all groups of a per-head codebook pooled).

    Attributes:
        dead_fraction: share of codes never selected.
        mse: mean squared error between the selected codes and the codebook input.
        usage_entropy: entropy of the code-usage distribution divided by ``log(n_codes)`` (1 = uniform).
        code_norm: mean L2 norm of the code vectors.
        n_codes: codes per group; n_groups: groups (heads).
        dead_per_group: dead fraction of each group.
    """

    dead_fraction: float
    mse: float
    usage_entropy: float
    code_norm: float
    n_codes: int
    n_groups: int
    dead_per_group: list[float] = field(default_factory=list)


@torch.no_grad()
def codebook_metrics(model: nn.Module, cbs: Codebooks, batches: Iterable[torch.Tensor]) -> dict[str, CodebookMetrics]:
    """Dead-code fraction, MSE, usage entropy and code norm of every codebook on ``batches`` (e.g. held-out
    data). Training usage counts are saved and restored around the measurement.

    Example:
        >>> m = codebook_metrics(model, cbs, [fsm.sample(512, seed=123)])   # doctest: +SKIP
        >>> m["blocks.0.hook_mlp_out"].dead_fraction                        # doctest: +SKIP
    """
    device = _device_of(model)
    saved = {s: layer.usage.clone() for s, layer in cbs.items()}
    mse_sum = {s: torch.zeros((), device=device) for s in cbs.sites}
    was_training = model.training
    model.eval()
    n = 0
    try:
        cbs.reset_usage()
        for tokens in batches:
            model(tokens.to(device))
            for s, layer in cbs.items():
                mse_sum[s] += layer.last_mse
            n += 1
        out = {}
        for s, layer in cbs.items():
            usage = layer.usage.double()
            dead = (usage == 0).double()
            p = (usage / usage.sum(-1, keepdim=True).clamp(min=1)).clamp(min=0)
            ent = -(p * p.clamp(min=1e-30).log()).sum(-1).mean() / math.log(max(2, layer.n_codes))
            out[s] = CodebookMetrics(
                dead_fraction=float(dead.mean()), mse=float(mse_sum[s] / max(1, n)), usage_entropy=float(ent),
                code_norm=float(layer.codes.norm(dim=-1).mean()), n_codes=layer.n_codes,
                n_groups=layer.n_groups, dead_per_group=[float(v) for v in dead.mean(-1).tolist()])
        return out
    finally:
        for s, layer in cbs.items():
            layer.usage.copy_(saved[s])
        model.train(was_training)


@dataclass
class TrainResult:
    """What :func:`train` returns: the loss history (one row per check interval), the final per-codebook
    metrics on the last interval's training usage, steps done and seconds.

    Example:
        >>> result.save("runs/tokfsm/train_result.json"); TrainResult.load("runs/tokfsm/train_result.json")  # doctest: +SKIP
    """

    steps: int
    seconds: float
    history: list[dict[str, float]]
    config: dict[str, Any]
    dead_codes_replaced: int = 0

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the result as version-stamped JSON; returns the path."""
        return write_json(path, {**stamp("codebook-train"), **asdict(self)})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainResult:
        """Read a result written by :meth:`save`."""
        return dataclass_from_dict(cls, read_json(path, "codebook-train"))

    def plot(self, ax: Any = None) -> Any:
        """Task and codebook loss against step (matplotlib axes)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3))
        steps = [h["step"] for h in self.history]
        ax.plot(steps, [h["task_loss"] for h in self.history], label="task loss")
        ax.plot(steps, [h["codebook_loss"] for h in self.history], label="codebook loss")
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend()
        return ax




def _optimizer(model: nn.Module, cbs: Codebooks, cfg: TrainConfig) -> torch.optim.AdamW:
    cb_ids = {id(p) for p in cbs.parameters()}
    groups: list[dict[str, Any]] = [{"params": list(cbs.parameters()), "lr": cfg.lr_codebook, "weight_decay": 0.0,
                                     "base_lr": cfg.lr_codebook}]
    if not cfg.freeze_model:
        params = [p for p in model.parameters() if id(p) not in cb_ids and p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        other = [p for p in params if p.dim() < 2]
        groups.append({"params": decay, "lr": cfg.lr_model, "weight_decay": cfg.weight_decay, "base_lr": cfg.lr_model})
        groups.append({"params": other, "lr": cfg.lr_model, "weight_decay": 0.0, "base_lr": cfg.lr_model})
    fused = _device_of(model).type == "cuda"
    return torch.optim.AdamW(groups, betas=(0.9, 0.99), fused=fused) if fused else torch.optim.AdamW(
        groups, betas=(0.9, 0.99))


def _save_checkpoint(directory: Path, model: nn.Module, cbs: Codebooks, opt: torch.optim.Optimizer, step: int,
                     cfg: TrainConfig, history: list[dict[str, float]]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model/{k}"] = v.detach().cpu().clone()
    cb_tensors, cb_meta = codebooks_state(cbs)
    tensors.update({f"codebooks/{k}": v for k, v in cb_tensors.items()})
    opt_state = opt.state_dict()
    scalars: dict[str, dict[str, float]] = {}
    for idx, st in opt_state["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                tensors[f"optim/{idx}/{name}"] = value.detach().cpu().clone()
            else:
                scalars.setdefault(str(idx), {})[name] = float(value)
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]}
              for g in opt_state["param_groups"]]
    write_tensors(directory / "checkpoint.safetensors", tensors)
    write_json(directory / "checkpoint.json", {
        **stamp("codebook-checkpoint"), "step": step, "train_config": asdict(cfg), "codebooks": cb_meta,
        "model": model_fingerprint(model), "optimizer": {"param_groups": groups, "scalars": scalars},
        "history": history})


def _load_checkpoint(directory: Path, model: nn.Module, cbs: Codebooks, opt: torch.optim.Optimizer
                     ) -> tuple[int, list[dict[str, float]]]:
    meta = read_json(directory / "checkpoint.json", "codebook-checkpoint")
    fp = model_fingerprint(model)
    diff = {k: (v, fp.get(k)) for k, v in meta.get("model", {}).items() if v != fp.get(k)}
    if diff:
        raise CheckpointMismatchError(f"checkpoint in {str(directory)!r} was saved for another model shape: "
                                      + ", ".join(f"{k} saved {a} vs model {b}" for k, (a, b) in diff.items()))
    saved_sites = [e["site"] for e in meta["codebooks"]["sites"]]
    if saved_sites != cbs.sites:
        raise CheckpointMismatchError(f"checkpoint in {str(directory)!r} has codebooks at {saved_sites}, "
                                      f"the model has them at {cbs.sites}")
    tensors = read_tensors(directory / "checkpoint.safetensors")
    device = _device_of(model)
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    from codebook.io import check_shapes

    check_shapes("model weights", dict(model.state_dict()), model_state, directory)
    load_codebooks_state(cbs, {k[len("codebooks/"):]: v for k, v in tensors.items() if k.startswith("codebooks/")},
                         directory)
    model.load_state_dict({k: v.to(device) for k, v in model_state.items()}, strict=False)
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, idx, name = k.split("/", 2)
            state.setdefault(int(idx), {})[name] = v.to(device)
    for idx, sc in meta["optimizer"]["scalars"].items():
        for name, value in sc.items():
            state.setdefault(int(idx), {})[name] = torch.tensor(value)
    try:
        opt.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    except (ValueError, KeyError) as err:
        raise CheckpointMismatchError(f"optimizer state in {str(directory)!r} does not fit this run ({err}); "
                                      "resume with the same freeze_model setting and sites") from err
    return int(meta["step"]), list(meta.get("history", []))


def train(model: nn.Module, cbs: Codebooks, data: Batches, config: TrainConfig | None = None, *,
          loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
          checkpoint_dir: str | os.PathLike[str] | None = None, resume: bool = False,
          verbose: bool = True) -> TrainResult:
    """Train the codebooks (and fine-tune the model unless frozen).

    Args:
        model: the model with ``cbs`` attached (its device is used).
        cbs: the attached codebooks (k-means-initialise them first with :func:`init_codebooks`).
        data: ``data(step) -> tokens`` or a sequence of token batches (cycled).
        config: :class:`TrainConfig`.
        loss_fn: ``loss_fn(model, tokens) -> scalar`` task loss (default :func:`next_token_loss`).
        checkpoint_dir: where ``checkpoint.safetensors`` + ``checkpoint.json`` are written.
        resume: continue from the checkpoint in ``checkpoint_dir`` if one exists.
        verbose: tqdm progress bar.

    Returns:
        :class:`TrainResult`.

    Raises:
        NonFiniteActivationError: NaN/inf loss or codebook input; the checkpoint on disk is the last good one.
        CheckpointMismatchError: resuming from a checkpoint of another shape.

    Example:
        >>> result = train(model, cbs, batches, TrainConfig(steps=200), loss_fn=lm_loss)   # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    cfg = config if config is not None else TrainConfig()
    loss_fn = loss_fn if loss_fn is not None else next_token_loss
    device = _device_of(model)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    frozen: list[nn.Parameter] = []
    if cfg.freeze_model:
        cb_ids = {id(p) for p in cbs.parameters()}
        frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in cb_ids]
        for p in frozen:
            p.requires_grad_(False)
    opt = _optimizer(model, cbs, cfg)
    start, history = 0, []
    if resume and ckpt is not None and (ckpt / "checkpoint.json").exists():
        start, history = _load_checkpoint(ckpt, model, cbs, opt)
        logger.info("resumed from %s at step %d", ckpt, start)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + start)
    bad = torch.zeros((), dtype=torch.bool, device=device)
    acc = torch.zeros(2, device=device)
    acc_n = 0
    replaced = torch.zeros((), device=device, dtype=torch.long)
    last_good = "none yet" if ckpt is None or not (ckpt / "checkpoint.json").exists() else str(ckpt)
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), desc="codebook train", disable=not verbose, initial=start, total=cfg.steps)
    try:
        for step in bar:
            factor = lr_factor(step, cfg.steps, cfg.warmup_steps, cfg.lr_schedule, cfg.min_lr_ratio)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * factor
            tokens = _batch(data, step).to(device, non_blocking=True)
            task = loss_fn(model, tokens)
            cb_loss = cbs.loss().to(task.device)
            loss = task + cb_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                params = [p for g in opt.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
            opt.step()
            bad |= ~torch.isfinite(loss.detach())
            acc += torch.stack([task.detach(), cb_loss.detach()]).float()
            acc_n += 1
            for _, layer in cbs.items():
                every = layer.config.dead_code_every
                if every and (step + 1) % every == 0:
                    replaced += layer.replace_dead_codes(gen, opt)
            done = step + 1
            due_ckpt = ckpt is not None and (
                (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps)
            if done % cfg.check_every == 0 or done == cfg.steps or due_ckpt:
                if bool(bad):  # NaN in an activation reaches the loss: the straight-through output carries it
                    where = ""
                    try:
                        cbs.check_finite()
                    except NonFiniteActivationError as err:
                        where = f" ({err})"
                    raise NonFiniteActivationError(
                        f"training stopped at step <= {done}: the loss became NaN or inf{where}; last good "
                        f"checkpoint: {last_good}. Lower the learning rates, check the inputs, or resume from "
                        "the checkpoint.")
                vals = (acc / max(1, acc_n)).tolist()
                history.append({"step": done, "task_loss": vals[0], "codebook_loss": vals[1]})
                bar.set_postfix(task=f"{vals[0]:.4f}", cb=f"{vals[1]:.4f}", refresh=False)
                acc.zero_()
                acc_n = 0
                if due_ckpt:
                    _save_checkpoint(ckpt, model, cbs, opt, done, cfg, history)
                    last_good = f"{ckpt} (step {done})"
    finally:
        for p in frozen:
            p.requires_grad_(True)
    seconds = time.perf_counter() - t0
    return TrainResult(steps=cfg.steps, seconds=seconds, history=history, config=asdict(cfg),
                       dead_codes_replaced=int(replaced))


def tokfsm_batches(fsm: Any, batch_size: int, seed: int = 0) -> Callable[[int], torch.Tensor]:
    """``step -> tokens``: a fresh TokFSM batch per step (deterministic in ``seed`` and the step)."""
    return lambda step: fsm.sample(batch_size, seed=seed * 1_000_003 + 500_000 + step)


def fit_tokfsm(model: nn.Module, fsm: Any, sites: Sequence[str], config: Any, train_config: TrainConfig | None = None,
               *, batch_size: int = 128, init_sequences: int = 512, seed: int = 0,
               checkpoint_dir: str | os.PathLike[str] | None = None, resume: bool = False,
               verbose: bool = True) -> tuple[Codebooks, TrainResult]:
    """Attach codebooks to a TokFSM model, k-means-initialise them from real activations and train them (with
    the model fine-tuned jointly unless ``train_config.freeze_model``).

    Args:
        model: a trained TokFSM transformer (:func:`probe.zoo.tokfsm.pretrained`).
        fsm: the :class:`~probe.data.tokfsm.TokFSM`.
        sites: hook names (e.g. :func:`codebook.attach.site_names`).
        config: a :class:`~codebook.layer.CodebookConfig` (or mapping site -> config).
        train_config: :class:`TrainConfig`.
        batch_size: sequences per step.
        init_sequences: sequences whose activations seed the k-means initialisation.
        seed: seed of data, initialisation and re-seeding.
        checkpoint_dir, resume, verbose: as in :func:`train`.

    Returns:
        ``(codebooks, train_result)``.

    Example:
        >>> cbs, res = fit_tokfsm(model, fsm, site_names(model), CodebookConfig(n_codes=1000))   # doctest: +SKIP
    """
    from codebook.attach import attach
    from probe.zoo.tokfsm import lm_loss

    device = _device_of(model)
    cbs = attach(model, sites, config, seed=seed, example_input=torch.full((1, 2), 10, device=device))
    init = fsm.sample(init_sequences, seed=seed * 1_000_003 + 7)[:, :-1]
    init_codebooks(model, cbs, list(init.split(256)), seed=seed, verbose=verbose)
    result = train(model, cbs, tokfsm_batches(fsm, batch_size, seed), train_config, loss_fn=lm_loss,
                   checkpoint_dir=checkpoint_dir, resume=resume, verbose=verbose)
    return cbs, result
