"""The TokFSM transformer of "Codebook Features" (Tamkin et al., 2023): build, train, cache, load, measure.

The paper's model (4 layers, d_model 128, 4 heads, d_mlp 512) as a TransformerLens ``TransformerBridge``,
trained (resumable, AdamW) on the TokFSM language of :mod:`probe.data.tokfsm`, cached, and measured:
``transition_accuracy`` (share of valid consecutive state pairs in sampled generations),
``first_transition_accuracy`` (share of valid next states after a one-state prompt) and ``top10_overlap``
(for each state, the overlap of the model's 10 most likely next states with its true successors).

Example:
    >>> from probe.data.tokfsm import TokFSM
    >>> from probe.zoo.tokfsm import make_model
    >>> model = make_model("relu", n_layers=1, d_model=32, d_mlp=64, n_heads=2)
    >>> model(TokFSM().sample(1, seed=0)[:, :8]).shape
    torch.Size([1, 8, 11])
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from probe.core.artifacts import read_json, read_metadata, read_tensors, stamp, write_json, write_tensors
from probe.core.errors import InvalidParameterError, ModelError
from probe.core.training import lr_factor, optimizer_tensors, restore_optimizer
from probe.data.tokfsm import BOS, VOCAB_SIZE, TokFSM

__all__ = [
    "SHIPPED_WEIGHTS",
    "TokFSMMetrics",
    "TokFSMTrainConfig",
    "evaluate",
    "generate",
    "lm_loss",
    "load_model",
    "make_model",
    "model_config",
    "pretrained",
    "save_model",
    "train_model",
]

log = logging.getLogger(__name__)

_KIND = "tokfsm-model"

#: Trained TokFSM transformers shipped with the package (``tokfsm-<act_fn>-seed0-steps1500``).
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights"

# ----------------------------------------------------------------------------------------------- the model


def model_config(act_fn: str = "gelu", seed: int = 0, **overrides: Any):
    """The paper's TokFSM transformer as a ``TransformerBridgeConfig`` (overrides allowed, e.g. for tiny tests).

    Example:
        >>> cfg = model_config("relu", n_layers=1)
        >>> (cfg.n_layers, cfg.d_model, cfg.act_fn)
        (1, 128, 'relu')
    """
    from transformer_lens.config import TransformerBridgeConfig

    if act_fn not in ("gelu", "relu", "gelu_new", "silu"):
        raise InvalidParameterError(f"act_fn must be one of 'gelu', 'relu', 'gelu_new', 'silu'; got {act_fn!r}")
    settings: dict[str, Any] = dict(n_layers=4, d_model=128, n_heads=4, d_head=32, d_mlp=512, d_vocab=VOCAB_SIZE,
                                    n_ctx=128, act_fn=act_fn, normalization_type="LN", seed=seed)
    settings.update(overrides)
    if "d_head" not in overrides and "n_heads" in overrides:
        settings["d_head"] = settings["d_model"] // settings["n_heads"]
    return TransformerBridgeConfig(**settings)


def make_model(act_fn: str = "gelu", seed: int = 0, device: str | torch.device = "cpu", **overrides: Any):
    """A freshly initialised TokFSM transformer (``TransformerBridge``), built offline.

    Example:
        >>> model = make_model("relu", n_layers=1, d_model=32, d_mlp=64, n_heads=2)
        >>> model(torch.tensor([[10, 0, 7]])).shape
        torch.Size([1, 3, 11])
    """
    from transformer_lens import TransformerBridge

    return TransformerBridge.boot_native(model_config(act_fn, seed=seed, **overrides), device=str(device))


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def lm_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``model`` on BOS-prefixed ``tokens`` (inputs ``[:, :-1]``)."""
    tokens = tokens.to(_model_device(model))
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1))


@dataclass(frozen=True)
class TokFSMTrainConfig:
    """Training settings of the TokFSM base model (AdamW, linear warm-up, cosine decay)."""

    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InvalidParameterError(f"{name} must be >= 1; got {getattr(self, name)}")
        if not self.lr > 0:
            raise InvalidParameterError(f"lr must be > 0; got {self.lr}")




def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"model.{k}": v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def train_model(
    model: nn.Module,
    fsm: TokFSM,
    config: TokFSMTrainConfig | None = None,
    device: str | torch.device | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    verbose: bool = True,
    **overrides: Any,
) -> nn.Module:
    """Train ``model`` on freshly sampled TokFSM sequences (every step a new batch).

    Args:
        model: a TokFSM transformer from :func:`make_model`.
        fsm: the language.
        config: training settings; keyword ``overrides`` (``steps=...``, ``lr=...``) replace its fields.
        device: where to train (default: the model's device).
        checkpoint: a safetensors file; written atomically every ``checkpoint_every`` steps with weights,
            optimizer state and step, and resumed from if it exists.
        verbose: show a tqdm progress bar.

    Returns:
        The trained model (in eval mode).

    Raises:
        ModelError: the loss became NaN/inf (the last checkpoint is kept).

    Example:
        >>> fsm = TokFSM()
        >>> m = make_model(n_layers=1, d_model=32, d_mlp=64, n_heads=2)
        >>> m = train_model(m, fsm, steps=2, batch_size=4, verbose=False)
    """
    from tqdm.auto import tqdm


    cfg = dataclasses.replace(config or TokFSMTrainConfig(), **overrides)
    if device is not None:
        model.to(device)
    dev = _model_device(model)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        tensors = read_tensors(checkpoint)
        meta = read_metadata(checkpoint)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        restore_optimizer(opt, {k: v.to(dev) for k, v in tensors.items() if k.startswith("opt.")})
        start = int(meta["step"])
        log.info("resuming TokFSM training from %s at step %d", checkpoint, start)
    model.train()
    bar = tqdm(range(start, cfg.steps), desc="tokfsm train", disable=not verbose, initial=start, total=cfg.steps)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup, min_ratio=0.05)
        batch = fsm.sample(cfg.batch_size, seed=cfg.seed * 1_000_003 + step).to(dev)
        loss = lm_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        last = step + 1 == cfg.steps
        if last or (step + 1) % cfg.checkpoint_every == 0:
            value = float(loss.detach())
            if not math.isfinite(value):
                raise ModelError(
                    f"TokFSM training diverged at step {step}: loss {value}. Lower lr (now {cfg.lr}); "
                    + (f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was set"))
            bar.set_postfix(loss=f"{value:.3f}")
            if checkpoint is not None:
                write_tensors(checkpoint, {**_state_tensors(model), **optimizer_tensors(opt)},
                              {"step": str(step + 1), "format": stamp(_KIND)["format"]})
    model.eval()
    return model


def _arch(model: nn.Module) -> dict[str, Any]:
    cfg = model.cfg
    return {k: getattr(cfg, k) for k in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx",
                                         "act_fn", "normalization_type")}


def save_model(model: nn.Module, directory: str | os.PathLike[str], info: dict[str, Any] | None = None) -> Path:
    """Save a TokFSM transformer as ``model.safetensors`` + ``config.json`` (architecture, version stamp).

    Example:
        >>> import tempfile
        >>> m = make_model(n_layers=1, d_model=32, d_mlp=64, n_heads=2)
        >>> d = save_model(m, tempfile.mkdtemp())
        >>> load_model(d).cfg.d_model
        32
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_tensors(directory / "model.safetensors", dict(model.state_dict()), {"format": stamp(_KIND)["format"]})
    write_json(directory / "config.json", {**stamp(_KIND), "architecture": _arch(model), "info": info or {}})
    return directory


def load_model(directory: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """Load a model written by :func:`save_model` (eval mode).

    Raises:
        ModelError: missing or corrupt files, or weights that do not fit the stored architecture.
    """
    directory = Path(directory)
    cfg_path, weights = directory / "config.json", directory / "model.safetensors"
    if not cfg_path.exists() or not weights.exists():
        raise ModelError(f"no TokFSM model in {directory}: expected config.json and model.safetensors")
    try:
        meta = read_json(cfg_path, _KIND, what="TokFSM model config")
        arch = dict(meta["architecture"])
        tensors = read_tensors(weights)
    except Exception as exc:  # safetensors raises its own error type for a damaged header
        raise ModelError(f"corrupt TokFSM model in {directory}: {exc}. Delete the folder and retrain.") from exc
    act_fn = arch.pop("act_fn")
    model = make_model(act_fn, device=device, **arch)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ModelError(f"weights in {weights} do not fit the architecture in {cfg_path}: {exc}") from exc
    model.info = meta.get("info", {})
    return model.eval()


def pretrained(
    act_fn: str = "gelu",
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    config: TokFSMTrainConfig | None = None,
    seed: int = 0,
    verbose: bool = True,
    use_shipped: bool = True,
) -> nn.Module:
    """The trained TokFSM transformer: trained once (resumable) and cached; later calls load it.

    The models trained with the default settings (seeds shipped: 0) come with the package
    (:data:`SHIPPED_WEIGHTS`, trained on a GPU by ``benchmarks/tokfsm_base.py``) and load in a second. Others
    are trained once (resumable from the checkpoint in the cache folder) and cached as
    ``<cache>/tokfsm-<act_fn>-seed<seed>-steps<steps>`` with ``model.safetensors`` and ``config.json``
    (which also holds the training settings, time and metrics). ``use_shipped=False`` skips the shipped
    weights (to retrain and measure, as ``benchmarks/tokfsm_base.py`` does).

    Example:
        >>> model = pretrained("gelu")  # doctest: +SKIP
    """
    from probe.core.paths import cache_dir as resolve_cache

    cfg = config or TokFSMTrainConfig(seed=seed)
    name = f"tokfsm-{act_fn}-seed{cfg.seed}-steps{cfg.steps}"
    shipped_dir = SHIPPED_WEIGHTS / name
    if use_shipped and cfg == TokFSMTrainConfig(seed=cfg.seed) and (shipped_dir / "config.json").exists():
        return load_model(shipped_dir, device=device)
    folder = resolve_cache(cache_dir) / name
    if (folder / "config.json").exists():
        return load_model(folder, device=device)
    fsm = TokFSM()
    model = make_model(act_fn, seed=cfg.seed, device=device)
    log.warning("training the TokFSM %s transformer (%d steps): about 40 min per 1,000 steps on 2 CPU cores, "
                "a few minutes on a GPU; it resumes from %s if interrupted", act_fn, cfg.steps, folder)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        train_model(model, fsm, cfg, checkpoint=folder / "train-checkpoint.safetensors", verbose=verbose)
    except BaseException:
        if not any(folder.iterdir()):  # interrupted before the first checkpoint: leave no empty entry
            folder.rmdir()
        raise
    seconds = time.perf_counter() - t0
    metrics = evaluate(model, fsm, seed=1, device=device)
    info = {"train": dataclasses.asdict(cfg), "train_seconds": seconds, "device": str(device),
            "metrics": dataclasses.asdict(metrics)}
    save_model(model, folder, info)
    (folder / "train-checkpoint.safetensors").unlink(missing_ok=True)
    model.info = info
    return model


# ------------------------------------------------------------------------------------------- generation


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt: torch.Tensor,
    n_new: int,
    temperature: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """Sample ``n_new`` tokens after ``prompt`` (``[batch, t]``) with plain forward passes (hooks act).

    ``temperature=0`` takes the most likely token. The context is cut to the model's last ``n_ctx`` tokens.

    Example:
        >>> m = make_model(n_layers=1, d_model=32, d_mlp=64, n_heads=2)
        >>> generate(m, torch.full((2, 1), BOS), 4).shape
        torch.Size([2, 5])
    """
    if n_new < 0:
        raise InvalidParameterError(f"n_new must be >= 0; got {n_new}")
    if temperature < 0:
        raise InvalidParameterError(f"temperature must be >= 0; got {temperature}")
    dev = _model_device(model)
    tokens = torch.as_tensor(prompt, dtype=torch.long).to(dev)
    if tokens.ndim == 1:
        tokens = tokens[None]
    gen = torch.Generator(device=dev).manual_seed(seed)
    n_ctx = int(model.cfg.n_ctx)
    was_training = model.training
    model.eval()
    try:
        for _ in range(n_new):
            logits = model(tokens[:, -n_ctx:])[:, -1].float()
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=gen)
            tokens = torch.cat([tokens, nxt], dim=1)
    finally:
        model.train(was_training)
    return tokens


@dataclass(frozen=True)
class TokFSMMetrics:
    """How well a model speaks a TokFSM language (all in [0, 1])."""

    transition_accuracy: float
    first_transition_accuracy: float
    top10_overlap: float
    n_samples: int


@torch.no_grad()
def next_state_probs(model: nn.Module, fsm: TokFSM, states: torch.Tensor | None = None,
                     batch_size: int = 1000) -> torch.Tensor:
    """``P(next state | BOS, state)`` for each state (``[len(states), 100]``), exact from two digit steps."""
    dev = _model_device(model)
    states = torch.arange(fsm.config.n_states) if states is None else torch.as_tensor(states)
    prompts = torch.cat([torch.full((len(states), 1), BOS), fsm.encode(states[:, None])], dim=1)
    # For each prompt append every first digit: P(d1 | prompt) and P(d2 | prompt, d1) in one pass.
    rows = torch.cat([prompts.repeat_interleave(10, 0), torch.arange(10).repeat(len(states))[:, None]], 1)
    out = []
    for i in range(0, len(rows), batch_size):
        out.append(torch.log_softmax(model(rows[i:i + batch_size].to(dev)).float(), -1).cpu())
    logp = torch.cat(out).reshape(len(states), 10, rows.shape[1], VOCAB_SIZE)
    first = logp[:, 0, -2, :10]  # P(d1 | prompt): same in all ten copies
    second = logp[:, :, -1, :10]  # P(d2 | prompt, d1)
    joint = (first[:, :, None] + second).exp().reshape(len(states), 100)
    return joint[:, : fsm.config.n_states]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    fsm: TokFSM,
    n_samples: int = 256,
    seed: int = 0,
    device: str | torch.device | None = None,
    temperature: float = 1.0,
) -> TokFSMMetrics:
    """Transition accuracy of sampled generations, first-transition accuracy and next-state top-10 overlap.

    * transition accuracy: ``n_samples`` sequences generated from BOS alone (128 tokens = 64 states); the share
      of their 63 consecutive state pairs that are edges of the FSM (a malformed state counts as invalid);
    * first-transition accuracy: for each state, ``ceil(n_samples / n_states)`` samples of the state after the
      prompt ``BOS s``; the share that are successors of ``s``;
    * top-10 overlap: for each state, ``|top-10 predicted next states ∩ successors| / n_edges``, averaged.

    Example:
        >>> m = make_model(n_layers=1, d_model=32, d_mlp=64, n_heads=2)
        >>> 0 <= evaluate(m, TokFSM(TokFSMConfig(seq_states=4)), n_samples=4).transition_accuracy <= 1
        True
    """
    if n_samples < 1:
        raise InvalidParameterError(f"n_samples must be >= 1; got {n_samples}")
    if device is not None:
        model.to(device)
    dev = _model_device(model)
    n_tokens = min(2 * fsm.config.seq_states, int(model.cfg.n_ctx))
    seqs = generate(model, torch.full((n_samples, 1), BOS, device=dev), n_tokens, temperature, seed).cpu()
    states = fsm.state_sequence(seqs)
    trans = float(fsm.is_valid(states[:, :-1], states[:, 1:]).float().mean())

    per_state = math.ceil(n_samples / fsm.config.n_states)
    starts = torch.arange(fsm.config.n_states).repeat(per_state)
    prompts = torch.cat([torch.full((len(starts), 1), BOS), fsm.encode(starts[:, None])], dim=1)
    out = generate(model, prompts, 2, temperature, seed + 1).cpu()
    nxt = fsm.state_sequence(out)[:, 1]
    first = float(fsm.is_valid(starts, nxt).float().mean())

    probs = next_state_probs(model, fsm)
    k = fsm.config.n_edges
    top = probs.topk(k, dim=1).indices
    overlap = float(fsm.valid.gather(1, top).float().sum(1).div(k).mean())
    return TokFSMMetrics(trans, first, overlap, n_samples)
