"""Data: the image data sets (MNIST, CIFAR-10, ERAN's test CSVs, scikit-learn digits) read from their
standard on-disk layouts, and the TokFSM language (:mod:`probe.data.tokfsm`).

Example:
    >>> from probe import data
    >>> ds = data.load_digits("train")
    >>> len(ds) > 1000
    True
"""

from __future__ import annotations

from probe.data.images import *  # noqa: F403  (the public names below)
from probe.data.images import __all__ as _names
from probe.data.tokfsm import BOS, VOCAB_SIZE, TokFSM, TokFSMConfig

__all__ = [*_names, "BOS", "VOCAB_SIZE", "TokFSM", "TokFSMConfig"]
