"""Real data sets from their standard on-disk layouts: MNIST, CIFAR-10, ERAN's test CSVs, scikit-learn digits.

Every loader returns an :class:`ImageDataset`: the raw pixels (``uint8``, or ``float32`` for digits) and
``int64`` labels, converted to ``float32`` on access. Pixels are in ``[0, 1]`` unless ``normalize`` asks
for per-channel standardisation. The VNN-COMP 2021 networks expect ``[0, 1]`` inputs, so that is the
default.

The data root is resolved by :func:`probe.core.paths.data_root`: an explicit ``root``, else
``$NEUROSPEC_DATA``, else ``../shared/data``. The layouts are the ones torchvision downloads:

- ``<root>/mnist/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (or the same files without
  ``.gz``);
- ``<root>/cifar10/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``;
- ``<root>/eran/{mnist,cifar10}_test.csv``.

The CIFAR-10 "python version" files are pickles, which is the standard distribution format. Unpickling can
run arbitrary code, so only read CIFAR-10 files from a source you trust.

Example:
    >>> from probe.data import load_digits, make_loader
    >>> ds = load_digits("train")
    >>> x, y = ds[0]
    >>> tuple(x.shape), isinstance(y, int)
    ((1, 8, 8), True)
    >>> xb, yb = next(iter(make_loader(ds, batch_size=32)))
    >>> tuple(xb.shape), tuple(yb.shape)
    ((32, 1, 8, 8), (32,))
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from probe.core.errors import CorruptDataError, DataNotFoundError, InvalidParameterError
from probe.core.paths import EXPECTED_LAYOUT, data_root
from probe.core.validate import check_choice

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATASET_NAMES",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "MNIST_CLASSES",
    "MNIST_MEAN",
    "MNIST_STD",
    "DataCheck",
    "ImageDataset",
    "check_data",
    "format_data_check",
    "load",
    "load_cifar10",
    "load_digits",
    "load_eran",
    "load_mnist",
    "make_loader",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
#: ``False``, ``True`` (standard constants) or ``(mean, std)`` with one value per channel.
Normalize = bool | tuple[Sequence[float], Sequence[float]]
Indices = int | slice | Sequence[int] | np.ndarray | torch.Tensor

MNIST_MEAN: tuple[float, ...] = (0.1307,)
MNIST_STD: tuple[float, ...] = (0.3081,)
CIFAR10_MEAN: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, ...] = (0.2470, 0.2435, 0.2616)
#: Mean / std of all 1,797 scikit-learn digits images after scaling by 1/16 (0.305260 / 0.376049).
DIGITS_MEAN: tuple[float, ...] = (0.3053,)
DIGITS_STD: tuple[float, ...] = (0.3760,)

MNIST_CLASSES: list[str] = [str(i) for i in range(10)]
CIFAR10_CLASSES: list[str] = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

DATASET_NAMES: tuple[str, ...] = ("mnist", "cifar10", "digits", "eran-mnist", "eran-cifar10")

_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_GZ_ERRORS = (EOFError, gzip.BadGzipFile, OSError, zlib.error)

# Official md5s (the ones torchvision checks); see shared/data/MANIFEST.md.
_MD5 = {
    "mnist/MNIST/raw/train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "mnist/MNIST/raw/train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "mnist/MNIST/raw/t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "mnist/MNIST/raw/t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "cifar10/cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar10/cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar10/cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar10/cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar10/cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar10/cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar10/cifar-10-batches-py/batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
_EXPECTED_COUNTS = {
    "mnist/MNIST/raw/train-images-idx3-ubyte.gz": 60000,
    "mnist/MNIST/raw/train-labels-idx1-ubyte.gz": 60000,
    "mnist/MNIST/raw/t10k-images-idx3-ubyte.gz": 10000,
    "mnist/MNIST/raw/t10k-labels-idx1-ubyte.gz": 10000,
    **{f"cifar10/cifar-10-batches-py/{b}": 10000 for b in (*_CIFAR_FILES["train"], "test_batch")},
    "eran/mnist_test.csv": 100,
    "eran/cifar10_test.csv": 100,
}
# sha256[:16] from MANIFEST.md.
_SHA256_16 = {
    "eran/mnist_test.csv": "91059c3f780826c6",
    "eran/cifar10_test.csv": "4cef6cdf54a6b78c",
    "vnncomp2021/mnistfc/mnist-net_256x2.onnx": "3a5c9730d60bbf1f",
    "vnncomp2021/mnistfc/mnist-net_256x4.onnx": "fb53b4745b5882be",
    "vnncomp2021/mnistfc/mnist-net_256x6.onnx": "295c175d7b477b2f",
    "vnncomp2021/marabou-cifar10/cifar10_small.onnx": "c8e3ce2a76c16244",
    "vnncomp2021/marabou-cifar10/cifar10_medium.onnx": "d3816a58e6b7b75c",
    "vnncomp2021/marabou-cifar10/cifar10_large.onnx": "282399741eab1e38",
}


# --------------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------------


class ImageDataset(Dataset):
    """An image classification data set held in memory as one tensor.

    Items are ``(x, y)`` with ``x`` a ``float32`` tensor ``(C, H, W)`` in ``[0, 1]`` (or standardised when
    ``normalize`` is on) and ``y`` a Python ``int``. Indexing with a list, array, tensor or slice of
    indices returns a whole batch ``(x (B, C, H, W), y (B,))`` in one tensor operation, which is what
    :func:`make_loader` relies on.

    Attributes:
        images: the stored pixels ``(N, C, H, W)``, ``uint8`` in ``0..255`` or ``float32`` in ``[0, 1]``.
        targets: ``int64`` labels, shape ``(N,)``.
        classes: class names, ``classes[k]`` is the name of label ``k``.
        mean: per-channel means (on the ``[0, 1]`` scale) subtracted when ``normalize`` is on.
        std: per-channel standard deviations divided by when ``normalize`` is on.
        normalize: whether items are standardised with ``mean`` / ``std``.
        name: data set name (``"mnist"``, ``"cifar10"``, ``"digits"``, ``"eran-mnist"``, ...).
        split: split name (``"train"``, ``"test"``, ``"all"``, ...).

    Args:
        images: ``(N, C, H, W)`` tensor, ``uint8`` (scaled by 1/255 on access) or floating (used as is).
        targets: ``(N,)`` integer labels in ``0..len(classes)-1``.
        classes: class names.
        name: data set name.
        split: split name.
        normalize: ``False`` for ``[0, 1]`` pixels, ``True`` for ``(x - mean) / std`` with the ``mean`` /
            ``std`` given here, or ``(mean, std)`` to standardise with custom per-channel constants.
        mean: standard per-channel means; ``None`` computes them from ``images``.
        std: standard per-channel standard deviations; ``None`` computes them from ``images``.

    Raises:
        ValueError: shapes, dtypes, labels or normalisation constants are inconsistent.

    Example:
        >>> import torch
        >>> ds = ImageDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]),
        ...                   ["a", "b"], name="toy", split="train")
        >>> x, y = ds[[0, 1, 2]]
        >>> tuple(x.shape), y.tolist()
        ((3, 1, 2, 2), [0, 1, 0])
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        classes: Sequence[str],
        *,
        name: str,
        split: str,
        normalize: Normalize = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise InvalidParameterError(
                f"images must be a 4-d tensor (N, C, H, W); got {type(images).__name__} "
                f"with shape {tuple(getattr(images, 'shape', ()))}"
            )
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise InvalidParameterError(f"images must be uint8 or floating point; got dtype {images.dtype}")
        targets = torch.as_tensor(targets)
        if targets.ndim != 1 or targets.shape[0] != images.shape[0]:
            raise InvalidParameterError(
                f"targets must have shape ({images.shape[0]},) to match images; got {tuple(targets.shape)}"
            )
        if targets.is_floating_point() or targets.dtype == torch.bool:
            raise InvalidParameterError(f"targets must be integers; got dtype {targets.dtype}")
        classes = [str(c) for c in classes]
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= len(classes)):
            raise InvalidParameterError(
                f"targets must lie in 0..{len(classes) - 1} (one per class name); "
                f"got range {int(targets.min())}..{int(targets.max())}"
            )
        self.images = images if images.dtype == torch.uint8 else images.to(torch.float32)
        self.targets = targets.to(torch.int64)
        self.classes = classes
        self.name = str(name)
        self.split = str(split)
        channels = images.shape[1]
        if mean is None or std is None:
            est_mean, est_std = _channel_stats(self.images)
            mean = est_mean if mean is None else mean
            std = est_std if std is None else std
        self.mean, self.std = _check_constants(mean, std, channels, "mean/std")
        if isinstance(normalize, bool):
            self.normalize = normalize
        elif isinstance(normalize, (tuple, list)) and len(normalize) == 2:
            self.mean, self.std = _check_constants(normalize[0], normalize[1], channels, "normalize")
            self.normalize = True
        else:
            raise InvalidParameterError(
                "normalize must be False, True or a pair (mean, std) of per-channel sequences; "
                f"got {normalize!r}"
            )
        self._mean_t = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        self._std_t = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        norm = f"mean={self.mean}, std={self.std}" if self.normalize else "[0, 1]"
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={self.shape}, classes={len(self.classes)}, pixels={norm})"
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def _convert(self, raw: torch.Tensor) -> torch.Tensor:
        x = raw.to(torch.float32) / 255.0 if raw.dtype == torch.uint8 else raw.to(torch.float32).clone()
        if self.normalize:
            x = (x - self._mean_t) / self._std_t
        return x

    def __getitem__(self, index: Indices) -> tuple[torch.Tensor, Any]:
        """One item ``(x (C, H, W), int)`` for an integer index, else a batch ``(x (B, C, H, W), y (B,))``.

        Raises:
            IndexError: an index is out of range.
            TypeError: the index is of an unsupported type.
        """
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} is out of range for a data set of {len(self)} items")
            return self._convert(self.images[i]), int(self.targets[i])
        if isinstance(index, torch.Tensor) and index.ndim == 0 and not index.is_floating_point():
            return self[int(index)]
        if isinstance(index, slice):
            return self._convert(self.images[index]), self.targets[index].clone()
        if isinstance(index, (Sequence, np.ndarray, torch.Tensor)) and not isinstance(index, (str, bytes)):
            idx = torch.as_tensor(np.asarray(index) if not isinstance(index, torch.Tensor) else index)
            if idx.numel() == 0:
                idx = idx.to(torch.int64)
            if idx.is_floating_point():
                raise TypeError(f"indices must be integers or booleans; got dtype {idx.dtype}")
            if idx.dtype != torch.bool:
                idx = idx.to(torch.int64)
            return self._convert(self.images[idx]), self.targets[idx].clone()
        raise TypeError(
            "index must be an int, a slice, or a list / numpy array / tensor of indices; "
            f"got {type(index).__name__}"
        )

    def tensors(self, indices: Indices | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All items (or those at ``indices``) as one batch.

        Args:
            indices: ``None`` for the whole data set, else a slice or a sequence / tensor of indices.

        Returns:
            ``(x, y)``: ``float32`` images ``(B, C, H, W)`` (scaled and normalised like items) and ``int64``
            labels ``(B,)``.

        Raises:
            IndexError: an index is out of range.

        Example:
            >>> x, y = load_digits("test").tensors()
            >>> x.dtype, y.dtype
            (torch.float32, torch.int64)
        """
        if indices is None:
            indices = slice(None)
        elif isinstance(indices, (int, np.integer)) and not isinstance(indices, bool):
            indices = [int(indices)]
        return self[indices]

    def subset(self, n: int) -> ImageDataset:
        """A new data set with the first ``n`` items (same classes and normalisation; shares memory).

        Args:
            n: number of items to keep, ``0 <= n <= len(self)``.

        Returns:
            The subset, with the same ``name`` and ``split``.

        Raises:
            ValueError: ``n`` is not an integer in ``0..len(self)``.

        Example:
            >>> len(load_digits("test").subset(10))
            10
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= int(n) <= len(self):
            raise InvalidParameterError(f"n must be an integer in 0..{len(self)}; got {n!r}")
        return self.select(slice(0, int(n)))

    def select(self, indices: slice | Sequence[int] | np.ndarray | torch.Tensor) -> ImageDataset:
        """A new data set with the items at ``indices`` (same classes and normalisation).

        Args:
            indices: a slice or a sequence / array / tensor of integer indices (or a boolean mask).

        Returns:
            The selected items as an :class:`ImageDataset`.

        Raises:
            IndexError: an index is out of range.

        Example:
            >>> load_digits("test").select([3, 1]).targets.shape
            torch.Size([2])
        """
        if isinstance(indices, slice):
            images, targets = self.images[indices], self.targets[indices]
        else:
            idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
            if idx.dtype != torch.bool:
                idx = idx.to(torch.int64)
            images, targets = self.images[idx], self.targets[idx]
        return ImageDataset(
            images,
            targets,
            self.classes,
            name=self.name,
            split=self.split,
            normalize=self.normalize,
            mean=self.mean,
            std=self.std,
        )


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if images.shape[0] == 0:
        return (0.0,) * images.shape[1], (1.0,) * images.shape[1]
    x = images.to(torch.float64)
    if images.dtype == torch.uint8:
        x = x / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), unbiased=False).clamp_min(1e-12)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _check_constants(
    mean: Sequence[float], std: Sequence[float], channels: int, param: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        mean_t = tuple(float(v) for v in mean)
        std_t = tuple(float(v) for v in std)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"{param} must be two sequences of {channels} numbers (one per channel); got {mean!r}, {std!r}"
        ) from exc
    if len(mean_t) != channels or len(std_t) != channels:
        raise InvalidParameterError(
            f"{param} must give one mean and one std per channel ({channels} channels); "
            f"got {len(mean_t)} means and {len(std_t)} stds"
        )
    if not all(s > 0 and np.isfinite(s) for s in std_t) or not all(np.isfinite(m) for m in mean_t):
        raise InvalidParameterError(
            f"{param}: every std must be finite and > 0 and every mean finite; got {mean_t}, {std_t}"
        )
    return mean_t, std_t




# --------------------------------------------------------------------------------------------------------
# MNIST (IDX)
# --------------------------------------------------------------------------------------------------------


def _mnist_file(raw_dir: Path, stem: str, root: Path) -> Path:
    gz, plain = raw_dir / f"{stem}.gz", raw_dir / stem
    if gz.is_file():
        return gz
    if plain.is_file():
        return plain
    hint = ""
    if (root / "MNIST" / "raw").is_dir():
        hint = f" {str(root)!r} looks like the mnist folder itself: pass its parent as the data root."
    elif not raw_dir.is_dir():
        hint = f" The folder {str(raw_dir)!r} does not exist."
    raise DataNotFoundError(
        f"MNIST file not found: {str(gz)!r} (nor the un-gzipped {plain.name!r}).{hint} "
        f"Download MNIST (e.g. torchvision.datasets.MNIST(root='<root>/mnist', download=True)). "
        f"Expected layout: {EXPECTED_LAYOUT}"
    )


def _read_maybe_gz(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except _GZ_ERRORS as exc:
        raise CorruptDataError(
            f"cannot read {str(path)!r}: {type(exc).__name__}: {exc}. The file is truncated or corrupt; "
            "re-download it (and check its md5 with probe.data.check_data())."
        ) from exc


def _parse_idx(path: Path, data: bytes, magic: int, ndim: int) -> np.ndarray:
    header = 4 + 4 * ndim
    fix = "re-download the file (and check its md5 with probe.data.check_data())"
    if len(data) < header:
        raise CorruptDataError(
            f"{str(path)!r} is too short for an IDX header ({len(data)} bytes, need {header}); {fix}."
        )
    got = int.from_bytes(data[0:4], "big")
    if got != magic:
        raise CorruptDataError(
            f"{str(path)!r} has IDX magic number {got}, expected {magic} "
            f"({'images' if magic == _IDX_IMAGES_MAGIC else 'labels'}); wrong or corrupt file, {fix}."
        )
    dims = [int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise CorruptDataError(
            f"{str(path)!r}: the header says shape {tuple(dims)} ({expected} bytes in all) but the "
            f"decompressed file has {len(data)} bytes; {fix}."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(
    split: str = "train", root: PathLike | None = None, normalize: Normalize = False
) -> ImageDataset:
    """Load MNIST from ``<root>/mnist/MNIST/raw`` (the original IDX files, gzipped or not).

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images, the ``t10k`` files).
        root: data root; ``None`` means ``$NEUROSPEC_DATA``, else ``../shared/data``.
        normalize: ``False`` for pixels in ``[0, 1]``, ``True`` for ``(x - 0.1307) / 0.3081``, or a
            custom ``((mean,), (std,))``.

    Returns:
        An :class:`ImageDataset` with ``uint8`` images ``(N, 1, 28, 28)`` and classes ``"0".."9"``.

    Raises:
        ValueError: ``split`` or ``normalize`` is invalid.
        DataNotFoundError: the data root or a file is missing (the message names the path and the layout).
        CorruptDataError: a file is truncated, not gzip, has a wrong magic number or a length that does
            not match its header, or images and labels disagree.

    Example:
        >>> ds = load_mnist("test")  # doctest: +SKIP
        >>> len(ds), ds.shape  # doctest: +SKIP
        (10000, (1, 28, 28))
    """
    check_choice("split", split, tuple(_MNIST_FILES))
    base = data_root(root)
    raw_dir = base / "mnist" / "MNIST" / "raw"
    img_path = _mnist_file(raw_dir, _MNIST_FILES[split][0], base)
    lbl_path = _mnist_file(raw_dir, _MNIST_FILES[split][1], base)
    images = _parse_idx(img_path, _read_maybe_gz(img_path), _IDX_IMAGES_MAGIC, 3)
    labels = _parse_idx(lbl_path, _read_maybe_gz(lbl_path), _IDX_LABELS_MAGIC, 1)
    if images.shape[1:] != (28, 28):
        raise CorruptDataError(
            f"{str(img_path)!r} holds images of size {images.shape[1:]}, expected (28, 28); "
            "this is not MNIST, re-download the file."
        )
    if images.shape[0] != labels.shape[0]:
        raise CorruptDataError(
            f"{str(img_path)!r} has {images.shape[0]} images but {str(lbl_path)!r} has {labels.shape[0]} "
            "labels; the files do not belong together, re-download them."
        )
    if labels.size and int(labels.max()) > 9:
        raise CorruptDataError(
            f"{str(lbl_path)!r} has label {int(labels.max())}, expected 0..9; re-download it."
        )
    logger.debug("loaded MNIST %s: %d images from %s", split, images.shape[0], raw_dir)
    return ImageDataset(
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        MNIST_CLASSES,
        name="mnist",
        split=split,
        normalize=normalize,
        mean=MNIST_MEAN,
        std=MNIST_STD,
    )


# --------------------------------------------------------------------------------------------------------
# CIFAR-10 (python pickles)
# --------------------------------------------------------------------------------------------------------


def _cifar_dir(base: Path) -> Path:
    folder = base / "cifar10" / _CIFAR_FOLDER
    if folder.is_dir():
        return folder
    if (base / "cifar10").is_dir() and any(
        (base / "cifar10" / f).exists() for f in ("data_batch_1", "test_batch")
    ):
        hint = (
            f" The batch files are directly in {str(base / 'cifar10')!r}: move them into a sub-folder "
            f"{_CIFAR_FOLDER!r}."
        )
    elif (base / _CIFAR_FOLDER).is_dir():
        hint = f" {str(base)!r} looks like the cifar10 folder itself: pass its parent as the data root."
    else:
        hint = ""
    raise DataNotFoundError(
        f"CIFAR-10 folder not found: {str(folder)!r}.{hint} Download the CIFAR-10 python version "
        f"(e.g. torchvision.datasets.CIFAR10(root='<root>/cifar10', download=True)), which unpacks to "
        f"<root>/cifar10/{_CIFAR_FOLDER}/. Expected layout: {EXPECTED_LAYOUT}"
    )


def _unpickle(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataNotFoundError(f"CIFAR-10 file not found: {str(path)!r}. Expected layout: {EXPECTED_LAYOUT}")
    try:
        with path.open("rb") as fh:
            # Trusted-source assumption: this is the official distribution format (see module docstring).
            obj = pickle.load(fh, encoding="bytes")
    except Exception as exc:
        raise CorruptDataError(
            f"cannot unpickle {str(path)!r}: {type(exc).__name__}: {exc}. The file is truncated or not a "
            "CIFAR-10 python-version batch; re-download it (and check its md5 with probe.data.check_data())."
        ) from exc
    if not isinstance(obj, dict):
        raise CorruptDataError(
            f"{str(path)!r} holds a {type(obj).__name__}, expected a dict; re-download the file."
        )
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    fix = "re-download the file (and check its md5 with probe.data.check_data())"
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise CorruptDataError(
            f"{str(path)!r} lacks the key(s) {missing} (has {sorted(batch)}); not a CIFAR-10 batch, {fix}."
        )
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise CorruptDataError(f"{str(path)!r}: 'data' is {desc}, expected a uint8 array (N, 3072); {fix}.")
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise CorruptDataError(f"{str(path)!r}: 'labels' is not a list of integers; {fix}.") from exc
    if labels.shape != (data.shape[0],):
        raise CorruptDataError(
            f"{str(path)!r}: {data.shape[0]} images but labels of shape {labels.shape}; {fix}."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise CorruptDataError(
            f"{str(path)!r}: labels range {labels.min()}..{labels.max()}, expected 0..9; {fix}."
        )
    if data.shape[0] != 10000:
        logger.warning("%s holds %d images; official CIFAR-10 batches hold 10000", path, data.shape[0])
    return data, labels


def _cifar_classes(folder: Path) -> list[str]:
    meta = folder / "batches.meta"
    if not meta.is_file():
        return list(CIFAR10_CLASSES)
    names = _unpickle(meta).get("label_names")
    if not isinstance(names, (list, tuple)) or len(names) != 10:
        raise CorruptDataError(
            f"{str(meta)!r}: 'label_names' is missing or does not list 10 names; re-download the file."
        )
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def load_cifar10(
    split: str = "train", root: PathLike | None = None, normalize: Normalize = False
) -> ImageDataset:
    """Load CIFAR-10 from ``<root>/cifar10/cifar-10-batches-py`` (the official python version).

    The batches are pickles (the standard distribution format); unpickling can execute code, so only read
    files from a trusted source.

    Args:
        split: ``"train"`` (``data_batch_1..5``, 50,000 images) or ``"test"`` (``test_batch``, 10,000).
        root: data root; ``None`` means ``$NEUROSPEC_DATA``, else ``../shared/data``.
        normalize: ``False`` for pixels in ``[0, 1]``, ``True`` for the standard per-channel
            ``mean=(0.4914, 0.4822, 0.4465)``, ``std=(0.2470, 0.2435, 0.2616)``, or ``(mean, std)``.

    Returns:
        An :class:`ImageDataset` with ``uint8`` images ``(N, 3, 32, 32)`` (RGB, CHW) and the class names
        from ``batches.meta`` (the standard names when that file is absent).

    Raises:
        ValueError: ``split`` or ``normalize`` is invalid.
        DataNotFoundError: the data root, the ``cifar-10-batches-py`` folder or a batch is missing.
        CorruptDataError: a batch cannot be unpickled or does not hold ``data`` (uint8, N x 3072) and
            matching ``labels`` in 0..9.

    Example:
        >>> ds = load_cifar10("test")  # doctest: +SKIP
        >>> ds.shape, ds.classes[0]  # doctest: +SKIP
        ((3, 32, 32), 'airplane')
    """
    check_choice("split", split, tuple(_CIFAR_FILES))
    folder = _cifar_dir(data_root(root))
    datas, labels = [], []
    for fname in _CIFAR_FILES[split]:
        d, lab = _read_cifar_batch(folder / fname)
        datas.append(d)
        labels.append(lab)
    data = np.concatenate(datas)
    classes = _cifar_classes(folder)
    logger.debug("loaded CIFAR-10 %s: %d images from %s", split, data.shape[0], folder)
    # Rows are channel-planar (R 1024, G 1024, B 1024, each row-major), so this reshape is CHW.
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32))
    return ImageDataset(
        images,
        torch.from_numpy(np.concatenate(labels)),
        classes,
        name="cifar10",
        split=split,
        normalize=normalize,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )


# --------------------------------------------------------------------------------------------------------
# ERAN CSVs
# --------------------------------------------------------------------------------------------------------


def load_eran(
    dataset: str = "mnist", root: PathLike | None = None, normalize: Normalize = False
) -> ImageDataset:
    """Load ERAN's test CSV ``<root>/eran/{mnist,cifar10}_test.csv`` (the first 100 test images).

    Each row is ``label, pixel, pixel, ...`` with pixels ``0..255``: 784 for MNIST (row-major), 3072 for
    CIFAR-10 (pixel-interleaved RGB, i.e. HWC), which is converted to CHW.

    Args:
        dataset: ``"mnist"`` or ``"cifar10"``.
        root: data root; ``None`` means ``$NEUROSPEC_DATA``, else ``../shared/data``.
        normalize: as in :func:`load_mnist` / :func:`load_cifar10`.

    Returns:
        An :class:`ImageDataset` (``name="eran-<dataset>"``, ``split="test"``) with ``uint8`` images
        ``(N, 1, 28, 28)`` or ``(N, 3, 32, 32)``.

    Raises:
        ValueError: ``dataset`` or ``normalize`` is invalid.
        DataNotFoundError: the data root or the CSV is missing.
        CorruptDataError: a row has the wrong number of columns, a non-integer value, a pixel outside
            0..255 or a label outside 0..9 (the message gives the line number).

    Example:
        >>> ds = load_eran("mnist")  # doctest: +SKIP
        >>> len(ds), ds.shape  # doctest: +SKIP
        (100, (1, 28, 28))
    """
    check_choice("dataset", dataset, ("mnist", "cifar10"))
    path = data_root(root) / "eran" / f"{dataset}_test.csv"
    if not path.is_file():
        raise DataNotFoundError(f"ERAN test CSV not found: {str(path)!r}. Expected layout: {EXPECTED_LAYOUT}")
    n_pixels = 784 if dataset == "mnist" else 3072
    labels, rows = [], []
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptDataError(f"cannot read {str(path)!r} as ASCII CSV: {exc}; re-download it.") from exc
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != n_pixels + 1:
            raise CorruptDataError(
                f"{str(path)!r} line {lineno}: {len(fields)} columns, expected {n_pixels + 1} "
                f"(label + {n_pixels} pixels); re-download the file."
            )
        try:
            values = np.array([int(v) for v in fields], dtype=np.int64)
        except ValueError as exc:
            raise CorruptDataError(f"{str(path)!r} line {lineno}: non-integer value ({exc}).") from exc
        if not 0 <= values[0] <= 9 or values[1:].min() < 0 or values[1:].max() > 255:
            raise CorruptDataError(
                f"{str(path)!r} line {lineno}: label must be 0..9 and pixels 0..255; got label {values[0]}, "
                f"pixels {values[1:].min()}..{values[1:].max()}."
            )
        labels.append(values[0])
        rows.append(values[1:].astype(np.uint8))
    pixels = np.stack(rows) if rows else np.zeros((0, n_pixels), dtype=np.uint8)
    if dataset == "mnist":
        images = torch.from_numpy(pixels.reshape(-1, 1, 28, 28))
        classes, mean, std = MNIST_CLASSES, MNIST_MEAN, MNIST_STD
    else:
        images = torch.from_numpy(pixels.reshape(-1, 32, 32, 3)).permute(0, 3, 1, 2).contiguous()
        classes, mean, std = CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
    logger.debug("loaded ERAN %s: %d images from %s", dataset, len(labels), path)
    return ImageDataset(
        images,
        torch.tensor(labels, dtype=torch.int64),
        classes,
        name=f"eran-{dataset}",
        split="test",
        normalize=normalize,
        mean=mean,
        std=std,
    )


# --------------------------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------------------------


def load_digits(
    split: str = "train",
    normalize: Normalize = False,
    test_fraction: float = 0.25,
    random_state: int = 0,
) -> ImageDataset:
    """Load scikit-learn's bundled 8x8 digits (1,797 images, no download), split deterministically.

    Pixel values ``0..16`` are divided by 16, so images are ``float32`` in ``[0, 1]``. The split is
    stratified by class and fixed by ``random_state``; ``"train"`` and ``"test"`` are disjoint and
    together make ``"all"``.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        normalize: ``False`` for ``[0, 1]``, ``True`` for ``(x - 0.3053) / 0.3760`` (mean and std of all
            1,797 images on the ``[0, 1]`` scale), or ``((mean,), (std,))``.
        test_fraction: fraction of images in the test split, in ``(0, 1)``.
        random_state: seed of the split.

    Returns:
        An :class:`ImageDataset` with ``float32`` images ``(N, 1, 8, 8)`` and classes ``"0".."9"``.

    Raises:
        ValueError: ``split``, ``normalize``, ``test_fraction`` or ``random_state`` is invalid.

    Example:
        >>> len(load_digits("train")) + len(load_digits("test")) == len(load_digits("all"))
        True
    """
    check_choice("split", split, ("train", "test", "all"))
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0 < test_fraction < 1
    ):
        raise InvalidParameterError(f"test_fraction must be a number in (0, 1); got {test_fraction!r}")
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
        raise InvalidParameterError(f"random_state must be an int; got {random_state!r}")
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    targets = np.asarray(bunch.target, dtype=np.int64)
    if split != "all":
        train_idx, test_idx = train_test_split(
            np.arange(len(targets)), test_size=test_fraction, random_state=int(random_state), stratify=targets
        )
        idx = np.sort(train_idx if split == "train" else test_idx)
        images, targets = images[idx], targets[idx]
    return ImageDataset(
        torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1),
        torch.from_numpy(targets),
        MNIST_CLASSES,
        name="digits",
        split=split,
        normalize=normalize,
        mean=DIGITS_MEAN,
        std=DIGITS_STD,
    )


# --------------------------------------------------------------------------------------------------------
# Loaders and dispatch
# --------------------------------------------------------------------------------------------------------


def make_loader(
    dataset: ImageDataset,
    batch_size: int = 256,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A :class:`~torch.utils.data.DataLoader` that fetches whole batches with one indexing operation.

    It uses ``batch_size=None`` with a :class:`~torch.utils.data.BatchSampler` as sampler, so each step
    calls ``dataset[list_of_indices]`` once instead of collating ``batch_size`` single items.

    Args:
        dataset: the data set (anything whose ``__getitem__`` accepts a list of indices and returns a batch).
        batch_size: items per batch, ``> 0``.
        shuffle: visit items in a random order (a fresh permutation every epoch).
        seed: seed of the shuffling generator; two loaders made with the same seed yield the same batches.
        drop_last: drop the last batch when it is smaller than ``batch_size``.

    Returns:
        The loader; it yields ``(x (B, C, H, W) float32, y (B,) int64)``, in the main process.

    Raises:
        ValueError: ``batch_size`` is not a positive integer or ``seed`` is not an integer.

    Example:
        >>> loader = make_loader(load_digits("test"), batch_size=100, shuffle=True, seed=1)
        >>> [tuple(x.shape) for x, _ in loader][-1]
        (50, 1, 8, 8)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise InvalidParameterError(f"batch_size must be a positive integer; got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidParameterError(f"seed must be an int; got {seed!r}")
    if shuffle:
        sampler: torch.utils.data.Sampler[int] = RandomSampler(
            dataset, generator=torch.Generator().manual_seed(int(seed))
        )
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=BatchSampler(sampler, batch_size=int(batch_size), drop_last=bool(drop_last)),
        num_workers=0,
    )


def load(
    name: str, split: str = "test", root: PathLike | None = None, normalize: Normalize = False
) -> ImageDataset:
    """Load a data set by name.

    Args:
        name: one of ``"mnist"``, ``"cifar10"``, ``"digits"``, ``"eran-mnist"``, ``"eran-cifar10"``.
        split: ``"train"`` or ``"test"`` (digits also ``"all"``; the ERAN sets only have ``"test"``).
        root: data root (ignored for digits, which ship with scikit-learn).
        normalize: ``False``, ``True`` or ``(mean, std)``, see :class:`ImageDataset`.

    Returns:
        The :class:`ImageDataset`.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names) or invalid ``split``.
        DataNotFoundError: the files are missing.
        CorruptDataError: the files are unreadable.

    Example:
        >>> load("digits", "test").name
        'digits'
    """
    check_choice("name", name, DATASET_NAMES)
    if name == "mnist":
        return load_mnist(split, root=root, normalize=normalize)
    if name == "cifar10":
        return load_cifar10(split, root=root, normalize=normalize)
    if name == "digits":
        return load_digits(split, normalize=normalize)
    check_choice("split", split, ("test",))
    return load_eran(name.removeprefix("eran-"), root=root, normalize=normalize)


# --------------------------------------------------------------------------------------------------------
# Data check
# --------------------------------------------------------------------------------------------------------


@dataclass
class DataCheck:
    """What :func:`check_data` found for one file.

    Attributes:
        name: the file's path relative to the data root.
        path: its absolute path.
        found: whether it exists.
        count: number of images / labels / CSV rows it holds (``None`` when not applicable or unreadable).
        checksum_ok: whether its md5 (MNIST, CIFAR-10) or sha256 prefix (ERAN CSVs, ONNX files) matches
            the official value; ``None`` when not checked.
        message: a short human-readable verdict.
    """

    name: str
    path: Path
    found: bool
    count: int | None
    checksum_ok: bool | None
    message: str

    @property
    def ok(self) -> bool:
        """Found, readable, no checksum mismatch and the expected number of items."""
        return self.found and self.checksum_ok is not False and self.message.startswith("ok")


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _count_mnist(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        head = fh.read(8)
    if len(head) < 8:
        raise CorruptDataError(f"{str(path)!r} is too short for an IDX header")
    return int.from_bytes(head[4:8], "big")


def _check_one(base: Path, rel: str) -> DataCheck:
    path = base / rel
    alt = path.with_suffix("") if path.suffix == ".gz" else None
    if not path.is_file() and alt is not None and alt.is_file():
        path = alt
    if not path.is_file():
        return DataCheck(rel, path, False, None, None, "missing")
    count: int | None = None
    problems: list[str] = []
    info: list[str] = []
    checksum_ok: bool | None = None
    try:
        if rel in _MD5 and path.name == Path(rel).name:
            got = _digest(path, "md5")
            checksum_ok = got == _MD5[rel]
            if not checksum_ok:
                problems.append(f"md5 {got} != official {_MD5[rel]}: re-download the file")
        elif rel in _SHA256_16:
            got = _digest(path, "sha256")[:16]
            checksum_ok = got == _SHA256_16[rel]
            if not checksum_ok:
                problems.append(f"sha256[:16] {got} != expected {_SHA256_16[rel]}: re-download the file")
        elif rel in _MD5:
            info.append("un-gzipped copy, md5 not checked")
        if rel.startswith("mnist/"):
            count = _count_mnist(path)
        elif rel.startswith("cifar10/") and not rel.endswith("batches.meta"):
            count = int(_read_cifar_batch(path)[0].shape[0])
        elif rel.endswith(".csv"):
            with path.open("rb") as fh:
                count = sum(1 for line in fh if line.strip())
        elif rel.endswith(".onnx"):
            info.append(f"{path.stat().st_size:,} bytes")
    except (CorruptDataError, *_GZ_ERRORS) as exc:
        return DataCheck(rel, path, True, count, checksum_ok, f"unreadable: {exc}")
    expected = _EXPECTED_COUNTS.get(rel)
    if count is not None and expected is not None and count != expected:
        problems.append(f"{count} items, expected {expected}")
    if problems:
        message = "; ".join(problems)
    else:
        message = "ok" + (f" ({'; '.join(info)})" if info else "")
    return DataCheck(rel, path, True, count, checksum_ok, message)


def check_data(root: PathLike | None = None) -> list[DataCheck]:
    """Check that the data files are present and intact. Never raises for a missing or bad file.

    Looks for the 4 MNIST and 7 CIFAR-10 files (verifying the official md5s and counting the images), the
    2 ERAN CSVs (row counts, sha256 prefix) and the 6 VNN-COMP 2021 ONNX networks (size, sha256 prefix).

    Args:
        root: data root; ``None`` means ``$NEUROSPEC_DATA``, else ``../shared/data``.

    Returns:
        One :class:`DataCheck` per file; when the root itself is missing, a first entry ``"<data root>"``
        says so and every file is reported missing.

    Example:
        >>> results = check_data()  # doctest: +SKIP
        >>> all(r.ok for r in results)  # doctest: +SKIP
        True
    """
    rels = [
        *_MD5,
        "eran/mnist_test.csv",
        "eran/cifar10_test.csv",
        *(k for k in _SHA256_16 if k.endswith(".onnx")),
    ]
    try:
        base = data_root(root)
    except DataNotFoundError as exc:
        base = (
            Path(root).expanduser()
            if root is not None
            else Path(os.environ.get("NEUROSPEC_DATA") or "../shared/data")
        )
        head = DataCheck("<data root>", base, False, None, None, str(exc))
        return [head] + [DataCheck(rel, base / rel, False, None, None, "missing") for rel in rels]
    results = [_check_one(base, rel) for rel in rels]
    logger.debug("checked %d data files under %s", len(results), base)
    return results


def format_data_check(results: Sequence[DataCheck]) -> str:
    """Render :func:`check_data` results as a plain-text table.

    Args:
        results: the entries to show.

    Returns:
        The table, one line per file, with a header and a one-line summary.

    Example:
        >>> print(format_data_check(check_data()))  # doctest: +SKIP
    """

    def status(r: DataCheck) -> str:
        if not r.found:
            return "MISSING"
        return "OK" if r.ok else "BAD"

    def checksum(r: DataCheck) -> str:
        return {True: "ok", False: "MISMATCH", None: "-"}[r.checksum_ok]

    rows = [("status", "file", "count", "checksum", "message")]
    rows += [
        (status(r), r.name, "-" if r.count is None else f"{r.count:,}", checksum(r), r.message)
        for r in results
    ]
    widths = [max(len(row[k]) for row in rows) for k in range(4)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 7)
    n_ok = sum(r.ok for r in results)
    lines.append(f"{n_ok}/{len(results)} files OK")
    return "\n".join(lines)
