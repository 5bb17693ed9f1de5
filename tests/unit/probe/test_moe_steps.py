"""probe.moe.detect's first step, DetectOptions: the defaults and normalisation of detect's arguments, and
every bad argument rejected with the exception and message detect gives."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from probe import moe
from probe.core.errors import InvalidParameterError
from probe.moe.detect import DetectOptions


def test_build_defaults_are_detects_and_normalised():
    opts = DetectOptions.build()
    assert opts.methods == ("activations",)
    assert (opts.n_experts, opts.top_k, opts.n_random, opts.seed) == (16, 4, 5, 0)
    assert opts.routers == moe.ROUTERS
    assert opts.fractions == (0.125, 0.25, 0.5)
    assert (opts.task, opts.max_tokens, opts.graph_knn, opts.device, opts.verbose) == (True, 8192, 16, None, True)

    opts = DetectOptions.build(2, ["weights", "random"], routers=["avg_k"], fractions=[1, 0.5])
    assert opts.methods == ("weights", "random")
    assert opts.top_k == 1  # n_experts // 4, at least 1
    assert opts.routers == ("avg_k",)
    assert opts.fractions == (1.0, 0.5) and all(type(f) is float for f in opts.fractions)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.top_k = 2  # type: ignore[misc]


@pytest.mark.parametrize("kwargs,message", [
    ({"method": []}, "method must name at least one of"),
    ({"method": ["weights", "weights"]}, "method lists a method twice"),
    ({"method": "kmeans"}, "method must be one of"),
    ({"routers": ["oracle", "top"]}, "routers must be one of"),
    ({"n_experts": 0}, "n_experts must be an int >= 1"),
    ({"n_experts": 4, "top_k": 5}, "top_k must be an int in 1..4"),
    ({"n_random": 0}, "n_random must be an int >= 1"),
    ({"fractions": (0, 0.5)}, r"fractions must lie in \(0, 1\]; got \[0, 0.5\]"),
    ({"fractions": (float("nan"),)}, r"fractions must lie in \(0, 1\]"),
])
def test_bad_arguments_fail_as_in_detect(kwargs, message):
    with pytest.raises(InvalidParameterError, match=message) as from_options:
        DetectOptions.build(**kwargs)
    # detect checks its arguments before it looks at the model or the data
    with pytest.raises(InvalidParameterError) as from_detect:
        moe.detect(nn.Sequential(nn.Linear(2, 2)), [torch.zeros(1, 2)], verbose=False, **kwargs)
    assert str(from_detect.value) == str(from_options.value)


def test_one_router_may_be_named_alone():
    from probe.moe import DetectOptions

    assert DetectOptions.build(4, "random", routers="oracle").routers == ("oracle",)
