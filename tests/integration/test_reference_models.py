"""The reference MNIST models reach their accuracy targets on the real test set (CIFAR-10 CNN: the full
training run is a benchmark, benchmarks/train_reference.py; here one short epoch checks the path)."""

from __future__ import annotations

import pytest

from probe.zoo import reference as models

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["mnist-mlp", "mnist-cnn"])
def test_mnist_reference_accuracy(name, data_root):
    model = models.train_reference(name, root=data_root, seed=0, verbose=False)
    info = model.reference_info
    assert info["test_accuracy"] >= 0.98, info
    assert info["settings"]["dataset"] == "mnist"


def test_cifar_cnn_short_run(tmp_path, data_root):
    model = models.train_reference("cifar10-cnn", root=data_root, seed=0, epochs=2, train_subset=4096,
                                   cache_dir=tmp_path, verbose=False)
    # Two epochs on 4k images: well above chance, far below the full run.
    assert model.reference_info["test_accuracy"] > 0.2
    assert (tmp_path / "models").is_dir()
