"""Unit tests of probe.data on tiny synthetic files in the standard layouts (no real data needed)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from probe.core.errors import CorruptDataError, DataError, DataNotFoundError
from probe.data import (
    CIFAR10_MEAN,
    DATASET_NAMES,
    MNIST_MEAN,
    MNIST_STD,
    DataCheck,
    ImageDataset,
    check_data,
    format_data_check,
    load,
    load_cifar10,
    load_digits,
    load_eran,
    load_mnist,
    make_loader,
)

N_TRAIN, N_TEST = 12, 7


def _idx_images(images: np.ndarray, magic: int = 2051) -> bytes:
    n, h, w = images.shape
    header = b"".join(int(v).to_bytes(4, "big") for v in (magic, n, h, w))
    return header + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray, magic: int = 2049) -> bytes:
    return int(magic).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes()


def _write_mnist(root: Path, gz: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    raw = root / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, prefix, n in (("train", "train", N_TRAIN), ("test", "t10k", N_TEST)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        for stem, payload in (
            (f"{prefix}-images-idx3-ubyte", _idx_images(images)),
            (f"{prefix}-labels-idx1-ubyte", _idx_labels(labels)),
        ):
            if gz:
                (raw / f"{stem}.gz").write_bytes(gzip.compress(payload))
            else:
                (raw / stem).write_bytes(payload)
        out[split] = (images, labels)
    return out


def _write_cifar_batch(path: Path, data: np.ndarray, labels: list[int], str_keys: bool = False) -> None:
    batch = {
        b"batch_label": b"test",
        b"labels": labels,
        b"data": data,
        b"filenames": [b"x.png"] * len(labels),
    }
    if str_keys:
        batch = {k.decode(): v for k, v in batch.items()}
    path.write_bytes(pickle.dumps(batch, protocol=2))


def _write_cifar(root: Path, n: int = 4, str_keys: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    out: dict[str, list] = {"train": [], "test": []}
    for fname in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        _write_cifar_batch(folder / fname, data, labels, str_keys=str_keys)
        out["test" if fname == "test_batch" else "train"].append((data, np.array(labels)))
    return {
        k: (np.concatenate([d for d, _ in v]), np.concatenate([lab for _, lab in v])) for k, v in out.items()
    }


# ------------------------------------------------------------------------------------------------------
# MNIST
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_roundtrip(tmp_path: Path, gz: bool) -> None:
    truth = _write_mnist(tmp_path, gz=gz)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        ds = load_mnist(split, root=tmp_path)
        assert len(ds) == n and ds.images.dtype == torch.uint8 and ds.images.shape == (n, 1, 28, 28)
        assert ds.name == "mnist" and ds.split == split and ds.classes == [str(i) for i in range(10)]
        assert np.array_equal(ds.images[:, 0].numpy(), truth[split][0])
        assert ds.targets.dtype == torch.int64
        assert np.array_equal(ds.targets.numpy(), truth[split][1])
        x, y = ds[3]
        assert x.dtype == torch.float32 and x.shape == (1, 28, 28) and isinstance(y, int)
        assert torch.allclose(x[0], torch.from_numpy(truth[split][0][3]).float() / 255)


def test_mnist_env_var_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_mnist(tmp_path)
    monkeypatch.setenv("NEUROSPEC_DATA", str(tmp_path))
    assert len(load_mnist("test")) == N_TEST


def test_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataNotFoundError, match="nope"):
        load_mnist("train", root=missing)
    with pytest.raises(DataNotFoundError):
        load_cifar10("test", root=missing)


def test_missing_mnist_file_names_path_and_layout(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    target = tmp_path / "mnist" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    target.unlink()
    with pytest.raises(DataNotFoundError) as info:
        load_mnist("test", root=tmp_path)
    assert str(target) in str(info.value) and "Expected layout" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_truncated_gz_is_corrupt(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    target = tmp_path / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    payload = target.read_bytes()
    target.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(CorruptDataError) as info:
        load_mnist("train", root=tmp_path)
    assert str(target) in str(info.value) and "re-download" in str(info.value)
    assert isinstance(info.value, DataError)


def test_not_gzip_is_corrupt(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    target = tmp_path / "mnist" / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(b"this is not gzip at all" * 10)
    with pytest.raises(CorruptDataError, match="t10k-images"):
        load_mnist("test", root=tmp_path)


def test_bad_magic(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    target = tmp_path / "mnist" / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(gzip.compress(_idx_images(np.zeros((N_TEST, 28, 28), np.uint8), magic=2049)))
    with pytest.raises(CorruptDataError, match=r"magic number 2049, expected 2051"):
        load_mnist("test", root=tmp_path)


def test_length_mismatch_and_count_mismatch(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    good = _idx_images(np.zeros((N_TEST, 28, 28), np.uint8))
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(good[:-5]))
    with pytest.raises(CorruptDataError, match="header says shape"):
        load_mnist("test", root=tmp_path)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(_idx_images(np.zeros((3, 28, 28), np.uint8)))
    )
    with pytest.raises(CorruptDataError, match="3 images but"):
        load_mnist("test", root=tmp_path)


def test_invalid_split() -> None:
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'test'\]; got 'val'"):
        load_mnist("val")


# ------------------------------------------------------------------------------------------------------
# CIFAR-10
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar_roundtrip(tmp_path: Path, str_keys: bool) -> None:
    truth = _write_cifar(tmp_path, str_keys=str_keys)
    train = load_cifar10("train", root=tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    data, labels = truth["train"]
    # channel-planar rows: R plane, then G, then B
    assert np.array_equal(train.images[:, 0].reshape(20, -1).numpy(), data[:, :1024])
    assert np.array_equal(train.images[:, 2, 5, 7].numpy(), data[:, 2048 + 5 * 32 + 7])
    assert np.array_equal(train.targets.numpy(), labels)
    test = load_cifar10("test", root=tmp_path)
    assert len(test) == 4 and test.classes[0] == "airplane" and test.mean == CIFAR10_MEAN


def test_cifar_meta_label_names(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    names = [f"c{i}".encode() for i in range(10)]
    meta = {b"num_cases_per_batch": 4, b"label_names": names, b"num_vis": 3072}
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "batches.meta").write_bytes(
        pickle.dumps(meta, protocol=2)
    )
    assert load_cifar10("test", root=tmp_path).classes == [f"c{i}" for i in range(10)]


def test_cifar_wrong_layout(tmp_path: Path) -> None:
    flat = tmp_path / "cifar10"
    flat.mkdir()
    _write_cifar_batch(flat / "test_batch", np.zeros((2, 3072), np.uint8), [0, 1])
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py") as info:
        load_cifar10("test", root=tmp_path)
    assert "directly in" in str(info.value)
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py"):
        load_cifar10("test", root=tmp_path / "cifar10")  # root one level too deep


def test_cifar_missing_batch(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match="data_batch_3"):
        load_cifar10("train", root=tmp_path)


def test_cifar_corrupt(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    target = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(CorruptDataError, match="test_batch"):
        load_cifar10("test", root=tmp_path)
    target.write_bytes(pickle.dumps({b"labels": [0]}, protocol=2))
    with pytest.raises(CorruptDataError, match="lacks the key"):
        load_cifar10("test", root=tmp_path)
    _write_cifar_batch(target, np.zeros((2, 1024), np.uint8), [0, 1])
    with pytest.raises(CorruptDataError, match=r"\(N, 3072\)"):
        load_cifar10("test", root=tmp_path)
    _write_cifar_batch(target, np.zeros((2, 3072), np.uint8), [0, 1, 2])
    with pytest.raises(CorruptDataError, match="labels of shape"):
        load_cifar10("test", root=tmp_path)


# ------------------------------------------------------------------------------------------------------
# ERAN CSVs
# ------------------------------------------------------------------------------------------------------


def _write_eran(root: Path, name: str, rows: list[list[int]]) -> Path:
    path = root / "eran" / f"{name}_test.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(",".join(str(v) for v in row) + "\n" for row in rows))
    return path


def test_eran_mnist_and_cifar(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    mn = rng.integers(0, 256, size=(3, 784))
    _write_eran(tmp_path, "mnist", [[7, *r] for r in mn.tolist()])
    ds = load_eran("mnist", root=tmp_path)
    assert ds.images.shape == (3, 1, 28, 28) and ds.targets.tolist() == [7, 7, 7] and ds.name == "eran-mnist"
    assert np.array_equal(ds.images.reshape(3, -1).numpy(), mn)

    hwc = rng.integers(0, 256, size=(2, 32, 32, 3))
    _write_eran(tmp_path, "cifar10", [[3, *r.reshape(-1).tolist()] for r in hwc])
    ds = load_eran("cifar10", root=tmp_path)
    assert ds.images.shape == (2, 3, 32, 32)
    assert np.array_equal(ds.images.numpy(), hwc.transpose(0, 3, 1, 2))
    assert load("eran-cifar10", "test", root=tmp_path).targets.tolist() == [3, 3]


def test_eran_wrong_columns(tmp_path: Path) -> None:
    _write_eran(tmp_path, "mnist", [[1] + [0] * 784, [2] + [0] * 783])
    with pytest.raises(CorruptDataError, match=r"line 2: 784 columns, expected 785"):
        load_eran("mnist", root=tmp_path)


def test_eran_bad_values(tmp_path: Path) -> None:
    _write_eran(tmp_path, "mnist", [[1] + [0] * 783 + [256]])
    with pytest.raises(CorruptDataError, match="line 1"):
        load_eran("mnist", root=tmp_path)
    with pytest.raises(DataNotFoundError, match=r"cifar10_test\.csv"):
        load_eran("cifar10", root=tmp_path)
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_eran("svhn", root=tmp_path)


# ------------------------------------------------------------------------------------------------------
# digits, ImageDataset, normalisation
# ------------------------------------------------------------------------------------------------------


def test_digits_split() -> None:
    train, test, full = load_digits("train"), load_digits("test"), load_digits("all")
    assert len(train) + len(test) == len(full) == 1797
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.float32
    assert float(full.images.min()) == 0.0 and float(full.images.max()) == 1.0
    assert len(test) == 450
    assert torch.equal(load_digits("test").targets, test.targets)  # deterministic
    assert not torch.equal(load_digits("test", random_state=1).targets, test.targets)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits("train", test_fraction=1.5)


def test_normalize_options(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    raw = load_mnist("test", root=tmp_path)
    x0, _ = raw.tensors()
    assert x0.min() >= 0 and x0.max() <= 1 and raw.normalize is False
    std = load_mnist("test", root=tmp_path, normalize=True)
    assert std.normalize and std.mean == MNIST_MEAN and std.std == MNIST_STD
    assert torch.allclose(std.tensors()[0], (x0 - 0.1307) / 0.3081)
    custom = load_mnist("test", root=tmp_path, normalize=((0.5,), (0.25,)))
    assert custom.normalize and custom.mean == (0.5,)
    assert torch.allclose(custom[2][0], (x0[2] - 0.5) / 0.25)
    with pytest.raises(ValueError, match="per channel"):
        load_mnist("test", root=tmp_path, normalize=((0.5, 0.5, 0.5), (0.2, 0.2, 0.2)))
    with pytest.raises(ValueError, match="normalize must be"):
        load_mnist("test", root=tmp_path, normalize="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        load_mnist("test", root=tmp_path, normalize=((0.5,), (0.0,)))
    dig = load_digits("all", normalize=True)
    x = dig.tensors()[0]
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3


def test_indexing_batches_and_subset() -> None:
    ds = load_digits("test")
    xb, yb = ds[[0, 5, 2]]
    assert xb.shape == (3, 1, 8, 8) and yb.tolist() == [int(ds.targets[i]) for i in (0, 5, 2)]
    xs, ys = ds[1:4]
    assert torch.equal(xs, ds.tensors(torch.tensor([1, 2, 3]))[0]) and ys.shape == (3,)
    assert torch.equal(ds[np.int64(4)][0], ds[torch.tensor(4)][0])
    assert ds[-1][1] == int(ds.targets[-1])
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(TypeError):
        ds["a"]  # type: ignore[index]
    # items are copies: mutating one must not change the stored data
    x, _ = ds[0]
    x += 5
    assert float(ds.images.max()) <= 1
    sub = ds.subset(10)
    assert isinstance(sub, ImageDataset) and len(sub) == 10 and torch.equal(sub.targets, ds.targets[:10])
    with pytest.raises(ValueError, match="n must be"):
        ds.subset(len(ds) + 1)
    assert ds.select([3, 1]).targets.tolist() == [int(ds.targets[3]), int(ds.targets[1])]


def test_image_dataset_validation() -> None:
    with pytest.raises(ValueError, match="4-d"):
        ImageDataset(torch.zeros(3, 2, 2), torch.zeros(3, dtype=torch.long), ["a"], name="t", split="s")
    with pytest.raises(ValueError, match="targets must lie"):
        ImageDataset(torch.zeros(2, 1, 2, 2), torch.tensor([0, 3]), ["a", "b"], name="t", split="s")
    ds = ImageDataset(torch.full((2, 1, 2, 2), 51, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"],
                      name="t", split="s")  # fmt: skip
    assert ds.mean == pytest.approx((0.2,)) and "n=2" in repr(ds)


# ------------------------------------------------------------------------------------------------------
# make_loader, load
# ------------------------------------------------------------------------------------------------------


def test_make_loader_batches() -> None:
    ds = load_digits("test")  # 450 items
    batches = list(make_loader(ds, batch_size=100))
    assert [len(y) for _, y in batches] == [100, 100, 100, 100, 50]
    assert batches[0][0].shape == (100, 1, 8, 8) and batches[0][0].dtype == torch.float32
    assert torch.equal(torch.cat([y for _, y in batches]), ds.targets)  # sequential order
    assert [len(y) for _, y in make_loader(ds, batch_size=100, drop_last=True)] == [100] * 4


def test_make_loader_shuffle_determinism() -> None:
    ds = load_digits("test")

    def order(seed: int) -> torch.Tensor:
        loader = make_loader(ds, batch_size=64, shuffle=True, seed=seed)
        return torch.cat([x.flatten(1).sum(1) for x, _ in loader])

    a, b, c = order(0), order(0), order(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    ys = torch.cat([y for _, y in make_loader(ds, batch_size=64, shuffle=True, seed=0)])
    assert sorted(ys.tolist()) == sorted(ds.targets.tolist())  # a permutation
    loader = make_loader(ds, batch_size=64, shuffle=True, seed=0)
    first, second = (torch.cat([y for _, y in loader]) for _ in range(2))
    assert not torch.equal(first, second)  # fresh permutation each epoch


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_make_loader_rejects_batch_size(bad: object) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        make_loader(load_digits("test"), batch_size=bad)  # type: ignore[arg-type]


def test_load_dispatch(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    assert len(load("mnist", "train", root=tmp_path)) == N_TRAIN
    assert load("digits", "all").name == "digits"
    with pytest.raises(ValueError) as info:
        load("imagenet", "test")
    for name in DATASET_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match=r"split must be one of \['test'\]"):
        load("eran-mnist", "train", root=tmp_path)


# ------------------------------------------------------------------------------------------------------
# check_data
# ------------------------------------------------------------------------------------------------------


def test_check_data_reports_without_raising(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    _write_cifar(tmp_path)
    _write_eran(tmp_path, "mnist", [[1] + [0] * 784] * 3)
    (tmp_path / "mnist" / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz").unlink()
    results = check_data(tmp_path)
    assert all(isinstance(r, DataCheck) for r in results) and len(results) == 19
    by_name = {r.name: r for r in results}
    assert not by_name["mnist/MNIST/raw/train-labels-idx1-ubyte.gz"].found
    timg = by_name["mnist/MNIST/raw/t10k-images-idx3-ubyte.gz"]
    assert timg.found and timg.count == N_TEST and timg.checksum_ok is False and not timg.ok
    assert by_name["cifar10/cifar-10-batches-py/test_batch"].count == 4
    assert not by_name["cifar10/cifar-10-batches-py/batches.meta"].found
    assert by_name["eran/mnist_test.csv"].count == 3
    assert not by_name["vnncomp2021/mnistfc/mnist-net_256x2.onnx"].found
    table = format_data_check(results)
    assert "MISSING" in table and "MISMATCH" in table and "files OK" in table


def test_check_data_missing_root(tmp_path: Path) -> None:
    results = check_data(tmp_path / "absent")
    assert results[0].name == "<data root>" and not any(r.found for r in results)
    assert "0/" in format_data_check(results)
