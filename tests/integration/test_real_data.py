"""probe.data on the real MNIST / CIFAR-10 / ERAN files (exact oracles from shared/data/MANIFEST.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from probe.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    ImageDataset,
    check_data,
    format_data_check,
    load_cifar10,
    load_eran,
    load_mnist,
)

pytestmark = pytest.mark.integration

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist(root: Path) -> dict[str, ImageDataset]:
    return {split: load_mnist(split, root=root) for split in ("train", "test")}


@pytest.fixture(scope="module")
def cifar(root: Path) -> dict[str, ImageDataset]:
    return {split: load_cifar10(split, root=root) for split in ("train", "test")}


def _channel_means(images: torch.Tensor) -> list[float]:
    # Exact integer sums: no float accumulation error over 150M pixels.
    n = images.shape[0] * images.shape[2] * images.shape[3]
    return [int(images[:, c].sum(dtype=torch.int64)) / (255 * n) for c in range(images.shape[1])]


def test_mnist_sizes_and_class_counts(mnist: dict[str, ImageDataset]) -> None:
    train, test = mnist["train"], mnist["test"]
    assert len(train) == 60000 and len(test) == 10000
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert torch.bincount(train.targets, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(test.targets, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_mnist_pixel_mean(mnist: dict[str, ImageDataset]) -> None:
    assert _channel_means(mnist["train"].images)[0] == pytest.approx(0.1307, abs=1e-4)
    assert _channel_means(mnist["test"].images)[0] == pytest.approx(0.132515, abs=1e-5)


def test_cifar_sizes_and_class_counts(cifar: dict[str, ImageDataset]) -> None:
    train, test = cifar["train"], cifar["test"]
    assert len(train) == 50000 and len(test) == 10000
    assert train.images.shape == (50000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.bincount(train.targets, minlength=10).tolist() == [5000] * 10
    assert torch.bincount(test.targets, minlength=10).tolist() == [1000] * 10
    assert torch.bincount(train.targets[:10000], minlength=10).tolist() == [
        1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981,
    ]  # fmt: skip
    assert train.classes == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ]  # fmt: skip


def test_cifar_channel_means(cifar: dict[str, ImageDataset]) -> None:
    assert _channel_means(cifar["train"].images) == pytest.approx([0.4914, 0.4822, 0.4465], abs=1e-4)
    assert _channel_means(cifar["test"].images) == pytest.approx([0.49421, 0.48513, 0.45041], abs=1e-5)


def test_mnist_matches_eran(root: Path, mnist: dict[str, ImageDataset]) -> None:
    eran = load_eran("mnist", root=root)
    assert len(eran) == 100
    assert torch.equal(eran.images, mnist["test"].images[:100])
    assert torch.equal(eran.targets, mnist["test"].targets[:100])


def test_cifar_matches_eran(root: Path, cifar: dict[str, ImageDataset]) -> None:
    eran = load_eran("cifar10", root=root)
    assert len(eran) == 100
    assert torch.equal(eran.images, cifar["test"].images[:100])
    assert torch.equal(eran.targets, cifar["test"].targets[:100])
    x_eran, _ = eran[0:100]
    x_cifar, _ = cifar["test"][0:100]
    assert torch.equal(x_eran, x_cifar)


def test_normalized_cifar_is_standardised(cifar: dict[str, ImageDataset]) -> None:
    train = cifar["train"]
    sub = ImageDataset(
        train.images[::10], train.targets[::10], train.classes, name="cifar10", split="train",
        normalize=True, mean=CIFAR10_MEAN, std=CIFAR10_STD,
    )  # fmt: skip
    x, _ = sub.tensors()
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.02
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.02


def test_check_data_all_ok(root: Path) -> None:
    results = check_data(root)
    assert len(results) == 19
    bad = [r for r in results if not (r.found and r.checksum_ok and r.ok)]
    assert not bad, format_data_check(bad)
    counts = {r.name: r.count for r in results}
    assert counts["mnist/MNIST/raw/train-images-idx3-ubyte.gz"] == 60000
    assert counts["cifar10/cifar-10-batches-py/test_batch"] == 10000
    assert counts["eran/cifar10_test.csv"] == 100
