"""Save and load codebooks, model weights and training checkpoints as safetensors + JSON (version-stamped).

Fixed file names in a directory:

* ``codebooks.safetensors`` / ``codebooks.json`` — the codes and usage counts of every attached codebook, the
  sites, their configs and shapes, and a fingerprint of the model they were trained in;
* ``model.safetensors`` / ``model.json`` — the (fine-tuned) model weights and its config summary;
* ``checkpoint.safetensors`` / ``checkpoint.json`` — the above plus the optimizer state and the step, for resume.

Loading checks every tensor's shape against the model/codebooks it is loaded into and raises
:class:`~codebook.errors.CheckpointMismatchError` naming the mismatches (never a deep ``load_state_dict``
traceback).

Example:
    >>> save_codebooks(cbs, "out/")                    # doctest: +SKIP
    >>> cbs = load_codebooks(model, "out/")            # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codebook.attach import Codebooks, attach, get_codebooks
from codebook.errors import CheckpointMismatchError
from codebook.layer import CodebookConfig
from probe.core.artifacts import FORMAT_VERSION, check_stamp, read_tensors, stamp, write_json, write_tensors
from probe.core.artifacts import read_json as read_artifact
from probe.core.errors import DataNotFoundError

__all__ = ["check_shapes", "dataclass_from_dict", "load_codebooks", "load_model_weights", "model_fingerprint", "read_json", "save_codebooks",
           "save_model_weights"]

_FP_KEYS = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx", "act_fn")


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """The shape-defining config values of a TransformerLens model (for compatibility checks)."""
    cfg = getattr(model, "cfg", None)
    return {k: getattr(cfg, k, None) for k in _FP_KEYS} if cfg is not None else {}


def dataclass_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build the dataclass ``cls`` from ``data``, ignoring keys it has no field for (e.g. the ``kind`` stamp)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def read_json(path: str | os.PathLike[str], kind: str | None = None) -> dict[str, Any]:
    """Read one of our JSON files; a missing file is a :class:`DataNotFoundError`, a damaged one a
    :class:`CorruptDataError`, an unknown format version a :class:`CheckpointMismatchError`. With ``kind``, a
    file that carries a ``format`` stamp must be of that kind (:func:`probe.core.artifacts.check_stamp`)."""
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"{str(path)!r} does not exist; pass the directory written by the save call")
    data = read_artifact(path)
    version = data.get("neurospec_format_version")
    if version != FORMAT_VERSION:
        raise CheckpointMismatchError(f"{str(path)!r} has format version {version!r}; this neurospec reads "
                                      f"version {FORMAT_VERSION}")
    if kind is not None and "format" in data:
        check_stamp(data, kind, path)
    return data


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage (e.g. tied embeddings)
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def check_shapes(what: str, expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], path: Any) -> None:
    """Refuse saved tensors ``got`` whose names or shapes differ from ``expected`` (``what`` and ``path`` name
    them in the message).

    Raises:
        CheckpointMismatchError: a missing, extra or differently shaped tensor (each named).

    Example:
        >>> check_shapes("model weights", dict(model.state_dict()), saved, "run/")   # doctest: +SKIP
    """
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = [f"{k}: saved {tuple(got[k].shape)}, model {tuple(expected[k].shape)}"
             for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]
    if missing or extra or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatches: " + "; ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else ""))
        if missing:
            parts.append(f"missing: {missing[:5]}")
        if extra:
            parts.append(f"unexpected: {extra[:5]}")
        raise CheckpointMismatchError(
            f"{what} in {str(path)!r} was saved for another model/codebook shape ({'; '.join(parts)}). "
            "Load it into a model built with the same config, or retrain.")


def codebooks_state(cbs: Codebooks) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and JSON description of attached codebooks."""
    tensors = {f"{site}/{name}": t for site, layer in cbs.items() for name, t in _state(layer).items()}
    meta = {"sites": [{"site": s, "config": layer.config.to_dict(), "d": layer.d, "n_groups": layer.n_groups,
                       "grouped_input": layer.grouped_input, "flatten_heads": cbs.flatten_heads[s]}
                      for s, layer in cbs.items()]}
    if cbs.model is not None:
        meta["model"] = model_fingerprint(cbs.model)
    return tensors, meta


def load_codebooks_state(cbs: Codebooks, tensors: dict[str, torch.Tensor], path: Any) -> None:
    """Copy saved codebook tensors into attached codebooks (shapes checked)."""
    expected = {f"{site}/{name}": t for site, layer in cbs.items() for name, t in layer.state_dict().items()}
    got = dict(tensors)
    check_shapes("codebooks", expected, got, path)
    for site, layer in cbs.items():
        prefix = f"{site}/"
        layer.load_state_dict({k[len(prefix):]: v for k, v in got.items() if k.startswith(prefix)})


def save_codebooks(cbs: Codebooks, directory: str | os.PathLike[str]) -> Path:
    """Write ``codebooks.safetensors`` + ``codebooks.json`` into ``directory``.

    Args:
        cbs: attached codebooks (``attach(...)``'s result or ``model.codebooks``).
        directory: target folder (created).

    Returns:
        The directory.

    Example:
        >>> save_codebooks(model.codebooks, "runs/tokfsm")   # doctest: +SKIP
    """
    directory = Path(directory)
    tensors, meta = codebooks_state(cbs)
    write_tensors(directory / "codebooks.safetensors", tensors)
    write_json(directory / "codebooks.json", {**stamp("codebooks"), **meta})
    return directory


def load_codebooks(model: nn.Module, directory: str | os.PathLike[str]) -> Codebooks:
    """Attach the codebooks saved in ``directory`` to ``model`` (replacing none: the model must have none).

    Args:
        model: a model of the same shape as the one the codebooks were saved from.
        directory: a folder written by :func:`save_codebooks`.

    Returns:
        The attached :class:`Codebooks`.

    Raises:
        CheckpointMismatchError: the model or the saved tensors have another shape.
        DataNotFoundError: the files are missing.

    Example:
        >>> cbs = load_codebooks(model, "runs/tokfsm")   # doctest: +SKIP
    """
    directory = Path(directory)
    meta = read_json(directory / "codebooks.json", "codebooks")
    fp_saved, fp_now = meta.get("model", {}), model_fingerprint(model)
    diff = {k: (fp_saved[k], fp_now.get(k)) for k in fp_saved if fp_saved[k] != fp_now.get(k)}
    if diff:
        raise CheckpointMismatchError(
            f"codebooks in {str(directory)!r} were saved for another model shape: "
            + ", ".join(f"{k} saved {a} vs model {b}" for k, (a, b) in diff.items()))
    entries = meta["sites"]
    configs = {e["site"]: CodebookConfig.from_dict(e["config"]) for e in entries}
    sites = [e["site"] for e in entries]
    cbs = attach(model, sites, configs)
    try:
        load_codebooks_state(cbs, read_tensors(directory / "codebooks.safetensors"), directory)
    except BaseException:
        cbs.detach()
        raise
    return cbs


def save_model_weights(model: nn.Module, directory: str | os.PathLike[str], extra: dict[str, Any] | None = None
                       ) -> Path:
    """Write the model's own weights (``model.state_dict()``; codebooks excluded on a TransformerBridge) as
    ``model.safetensors`` + ``model.json`` (config fingerprint plus ``extra``).

    Example:
        >>> save_model_weights(model, "runs/tokfsm", {"act_fn": "gelu"})   # doctest: +SKIP
    """
    directory = Path(directory)
    state = {k: v for k, v in _state(model).items() if not k.startswith("codebooks.")}
    write_tensors(directory / "model.safetensors", state)
    write_json(directory / "model.json", {**stamp("codebook-model"), "model": model_fingerprint(model), **(extra or {})})
    return directory


def load_model_weights(model: nn.Module, directory: str | os.PathLike[str]) -> nn.Module:
    """Load ``model.safetensors`` from ``directory`` into ``model`` (shapes checked first).

    Raises:
        CheckpointMismatchError: the weights were saved for another model shape.

    Example:
        >>> load_model_weights(make_model(), "runs/tokfsm")   # doctest: +SKIP
    """
    directory = Path(directory)
    read_json(directory / "model.json", "codebook-model")
    tensors = read_tensors(directory / "model.safetensors")
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("codebooks.")}
    check_shapes("model weights", expected, tensors, directory)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.load_state_dict({k: v.to(device) for k, v in tensors.items()}, strict=False)
    return model


def has_codebooks(model: nn.Module) -> bool:
    """Whether codebooks are attached to ``model``."""
    return get_codebooks(model) is not None
