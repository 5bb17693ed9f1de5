"""verify.network and verify.bounds on the VNN-COMP 2021 networks and ERAN's test images."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from helpers import eran_images

from probe.graph.onnx import load_onnx, run_reference
from probe.zoo.vnncomp import VNNCOMP_NETWORKS
from verify.bounds import crown_bounds, interval_bounds, output_bounds
from verify.network import ReluNetwork

pytestmark = pytest.mark.integration

logger = logging.getLogger(__name__)

NETWORKS = {
    "mnist-256x2": ((784, 1), [256, 256]),
    "mnist-256x4": ((784, 1), [256] * 4),
    "mnist-256x6": ((784, 1), [256] * 6),
    "cifar10-small": ((32, 32, 3), [1800, 576, 128, 64]),
}


@pytest.fixture(scope="module")
def nets(root: Path) -> dict[str, ReluNetwork]:
    return {name: ReluNetwork.from_onnx(root / VNNCOMP_NETWORKS[name]) for name in NETWORKS}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_from_onnx_matches_onnxruntime(name: str, root: Path, nets: dict[str, ReluNetwork]) -> None:
    net = nets[name]
    path = root / VNNCOMP_NETWORKS[name]
    shape, sizes = NETWORKS[name]
    assert net.source_path == path
    assert net.input_shape == shape
    assert net.relu_sizes == sizes
    assert net.relu_names == load_onnx(path).relu_names()
    assert net.n_outputs == 10
    x, labels = eran_images(root, "cifar10" if name.startswith("cifar") else "mnist")
    assert x.shape[1] == net.n_inputs
    ref = run_reference(path, x.astype(np.float32).reshape(len(x), *shape))
    ours = net.forward(x)
    assert np.abs(ours - ref).max() <= 1e-4
    np.testing.assert_array_equal(ours.argmax(1), ref.argmax(1))
    assert np.abs(net.run_source(x) - ref).max() <= 1e-4
    logger.info("%s: accuracy %.2f on ERAN's images", name, float(np.mean(ours.argmax(1) == labels)))


def test_crown_bounds_on_mnist_256x2_are_sound(root: Path, nets: dict[str, ReluNetwork]) -> None:
    net = nets["mnist-256x2"]
    x, labels = eran_images(root, "mnist")
    eps = 0.02
    lo, up = np.clip(x[0] - eps, 0.0, 1.0), np.clip(x[0] + eps, 0.0, 1.0)
    crown = crown_bounds(net, lo, up)
    ibp = interval_bounds(net, lo, up)
    rng = np.random.default_rng(0)
    pts = lo + (up - lo) * rng.random((2000, net.n_inputs))
    pts[:500] = np.where(rng.random((500, net.n_inputs)) < 0.5, lo, up)  # box vertices
    values = [*net.pre_activations(pts), net.forward(pts)]
    for (cl, cu), (il, iu), v in zip(crown, ibp, values, strict=True):
        assert (v >= cl - 1e-9).all() and (v <= cu + 1e-9).all()
        assert (cl >= il).all() and (cu <= iu).all()
    unstable = [int(((cl < 0) & (cu > 0)).sum()) for cl, cu in crown[:-1]]
    unstable_ibp = [int(((il < 0) & (iu > 0)).sum()) for il, iu in ibp[:-1]]
    logger.info("mnist-256x2, eps=%s: unstable neurons CROWN %s, IBP %s", eps, unstable, unstable_ibp)
    assert 0 < sum(unstable) <= sum(unstable_ibp)
    label = int(labels[0])
    C = np.eye(10)[label] - np.delete(np.eye(10), label, axis=0)
    clo, cup = output_bounds(net, lo, up, C)
    margins = values[-1] @ C.T
    assert (margins >= clo - 1e-9).all() and (margins <= cup + 1e-9).all()
