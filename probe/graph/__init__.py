"""The toolkit's view of a model: one place that turns a user's model into what the analyses need.

- :mod:`probe.graph.onnx`: ONNX networks as torch modules with hookable ReLUs (and an onnxruntime reference);
- :mod:`probe.graph.relus`: the ReLU sites of a torch model (modules or traced functional calls) and a
  recorder of their activations (NAP mining, verification);
- :mod:`probe.graph.ffn`: the FFN (MLP) sites of torch and TransformerLens models (emergent experts).

Example:
    >>> import torch
    >>> from probe.graph import find_relus
    >>> find_relus(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())).names
    ['1']
"""

from __future__ import annotations

from probe.graph.ffn import FFNSite, find_ffns
from probe.graph.onnx import (
    SUPPORTED_OPS,
    ConstantBinary,
    InputLayout,
    OnnxModule,
    Permute,
    PlanStep,
    Reshape,
    TensorBinary,
    load_onnx,
    run_reference,
)
from probe.graph.relus import ReluRecorder, ReluSite, ReluSites, find_relus

__all__ = [
    "SUPPORTED_OPS",
    "ConstantBinary",
    "FFNSite",
    "InputLayout",
    "OnnxModule",
    "Permute",
    "PlanStep",
    "ReluRecorder",
    "ReluSite",
    "ReluSites",
    "Reshape",
    "TensorBinary",
    "find_ffns",
    "find_relus",
    "load_onnx",
    "run_reference",
]
