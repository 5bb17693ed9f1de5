"""probe.graph.onnx on the six VNN-COMP 2021 networks and ERAN's 100 test images, against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import eran_images
from torch import nn

from probe.graph.onnx import run_reference
from probe.zoo.vnncomp import VNNCOMP_NETWORKS, load_vnncomp

pytestmark = pytest.mark.integration

# Accuracy of each network on ERAN's 100 test images (pixels / 255, no normalisation).
EXPECTED_ACCURACY = {
    "mnist-256x2": 1.00,
    "mnist-256x4": 1.00,
    "mnist-256x6": 0.99,
    "cifar10-small": 0.61,
    "cifar10-medium": 0.77,
    "cifar10-large": 0.78,
}
EXPECTED_RELUS = {"mnist-256x2": 2, "mnist-256x4": 4, "mnist-256x6": 6}


@pytest.fixture(scope="module")
def eran(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {dataset: eran_images(root, dataset, np.float32, n_rows=100) for dataset in ("mnist", "cifar10")}


def test_names_cover_the_files(root: Path) -> None:
    assert set(VNNCOMP_NETWORKS) == set(EXPECTED_ACCURACY)
    for rel in VNNCOMP_NETWORKS.values():
        assert (root / rel).is_file(), rel


@pytest.mark.parametrize("name", sorted(VNNCOMP_NETWORKS))
def test_network_matches_onnxruntime_and_accuracy(
    name: str, root: Path, eran: dict[str, tuple[np.ndarray, np.ndarray]]
) -> None:
    net = load_vnncomp(name, root=root)
    assert net.source_path == root / VNNCOMP_NETWORKS[name]
    relus = net.relu_names()
    assert relus and all(isinstance(dict(net.named_modules())[r], nn.ReLU) for r in relus)
    if name in EXPECTED_RELUS:
        assert len(relus) == EXPECTED_RELUS[name]
    if name.startswith("mnist"):
        pixels, labels = eran["mnist"]
        onnx_input = pixels.reshape(-1, 784, 1)  # the declared (1, 784, 1), looped sample by sample
        torch_input = torch.from_numpy(pixels.reshape(-1, 1, 28, 28))  # NCHW, adapted by input_layout="auto"
        assert net.input_shape == (784, 1)
    else:
        pixels, labels = eran["cifar10"]
        onnx_input = pixels.reshape(-1, 32, 32, 3)  # ERAN's rows are HWC-interleaved: already NHWC
        # NCHW, as torch loaders give it; input_layout="auto" permutes it back.
        torch_input = torch.from_numpy(onnx_input).permute(0, 3, 1, 2).contiguous()
        assert net.input_shape == (32, 32, 3)
    reference = run_reference(net.source_path, onnx_input)
    with torch.no_grad():
        ours = net(torch_input).numpy()
    assert ours.shape == reference.shape == (100, 10)
    assert float(np.max(np.abs(ours - reference))) <= 1e-5
    accuracy = float(np.mean(ours.argmax(axis=1) == labels))
    assert accuracy == pytest.approx(EXPECTED_ACCURACY[name], abs=1e-9)
    assert float(np.mean(reference.argmax(axis=1) == labels)) == pytest.approx(accuracy, abs=1e-9)
