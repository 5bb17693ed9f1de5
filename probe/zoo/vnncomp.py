"""The VNN-COMP 2021 networks in the data root (``mnistfc`` and ``marabou-cifar10``), by short name.

Example:
    >>> from probe.zoo.vnncomp import VNNCOMP_NETWORKS, load_vnncomp
    >>> sorted(VNNCOMP_NETWORKS)[:2]
    ['cifar10-large', 'cifar10-medium']
    >>> net = load_vnncomp("mnist-256x2")  # doctest: +SKIP
"""

from __future__ import annotations

import os

from probe.core.errors import ModelError
from probe.core.paths import data_root
from probe.graph.onnx import InputLayout, OnnxModule, load_onnx

__all__ = ["VNNCOMP_NETWORKS", "load_vnncomp"]

#: Short names of the VNN-COMP 2021 networks, relative to the data root.
VNNCOMP_NETWORKS: dict[str, str] = {
    "mnist-256x2": "vnncomp2021/mnistfc/mnist-net_256x2.onnx",
    "mnist-256x4": "vnncomp2021/mnistfc/mnist-net_256x4.onnx",
    "mnist-256x6": "vnncomp2021/mnistfc/mnist-net_256x6.onnx",
    "cifar10-small": "vnncomp2021/marabou-cifar10/cifar10_small.onnx",
    "cifar10-medium": "vnncomp2021/marabou-cifar10/cifar10_medium.onnx",
    "cifar10-large": "vnncomp2021/marabou-cifar10/cifar10_large.onnx",
}


def load_vnncomp(
    name: str, root: str | os.PathLike[str] | None = None, input_layout: InputLayout = "auto"
) -> OnnxModule:
    """Load one of the VNN-COMP 2021 networks by its short name.

    Args:
        name: a key of :data:`VNNCOMP_NETWORKS` (``"mnist-256x2"``, ..., ``"cifar10-large"``).
        root: the data root; ``None`` means ``$NEUROSPEC_DATA`` or ``../shared/data``.
        input_layout: see :func:`load_onnx`.

    Returns:
        The network as an :class:`OnnxModule`.

    Raises:
        ModelError: ``name`` is unknown (the message lists the valid names).
        DataNotFoundError: the data root does not exist.
        OnnxFileNotFoundError: the network file is missing under the root.

    Example:
        >>> net = load_vnncomp("cifar10-small")  # doctest: +SKIP
        >>> net.input_shape  # doctest: +SKIP
        (32, 32, 3)
    """
    if name not in VNNCOMP_NETWORKS:
        raise ModelError(f"unknown VNN-COMP network {name!r}; choose one of {sorted(VNNCOMP_NETWORKS)}")
    return load_onnx(data_root(root) / VNNCOMP_NETWORKS[name], input_layout=input_layout)
