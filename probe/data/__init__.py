"""Data: the image data sets (MNIST, CIFAR-10, ERAN's test CSVs, scikit-learn digits) read from their
standard on-disk layouts, and the TokFSM language (:mod:`probe.data.tokfsm`).

Example:
    >>> from probe import data
    >>> ds = data.load_digits("train")
    >>> len(ds) > 1000
    True
"""

from __future__ import annotations

from probe.data.images import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DATASET_NAMES,
    DIGITS_MEAN,
    DIGITS_STD,
    MNIST_CLASSES,
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
from probe.data.tokfsm import BOS, VOCAB_SIZE, TokFSM, TokFSMConfig

__all__ = [
    "BOS",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATASET_NAMES",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "MNIST_CLASSES",
    "MNIST_MEAN",
    "MNIST_STD",
    "VOCAB_SIZE",
    "DataCheck",
    "ImageDataset",
    "TokFSM",
    "TokFSMConfig",
    "check_data",
    "format_data_check",
    "load",
    "load_cifar10",
    "load_digits",
    "load_eran",
    "load_mnist",
    "make_loader",
]
