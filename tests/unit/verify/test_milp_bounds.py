"""MILP bounds of the first layers (issue 17 item 4): the compact model is sound and exact, with and without
fixed ReLU states; BoxBounds keeps them; verify() tightens the root once branch and bound stalls."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CASE_BIAS, relu_network

import verify.bab as bab_module
from probe.core.errors import InvalidParameterError
from verify import VerifyOptions, verify
from verify.bounds import BoxBounds, crown_bounds, lp_tighten
from verify.properties import robustness


def _inside(bounds, pre, slack: float = 1e-9) -> bool:
    return all(np.all(z >= lo - slack) and np.all(z <= up + slack)
               for (lo, up), z in zip(bounds, pre, strict=False))


@pytest.mark.parametrize("seed", range(3))
def test_milp_bounds_with_fixed_states_hold_for_every_input_that_follows_them(seed: int) -> None:
    net = relu_network((4, 10, 10, 8, 3), seed=40 + seed, bias_scale=CASE_BIAS)
    rng = np.random.default_rng(seed)
    lo, up = -np.ones(4), np.ones(4)
    x0 = rng.uniform(lo, up)
    z0 = net.pre_activations(x0[None])[0].reshape(-1)
    # fix layer 0 as x0 has it, for the neurons a tenth of the box away from 0 at x0
    act, ina = z0 > 0.1, z0 < -0.1
    fixed = {0: (act, ina)}
    crown = crown_bounds(net, lo, up, fixed=fixed)
    milp, stats = lp_tighten(net, lo, up, crown, fixed=fixed, exact=True)
    lp, _ = lp_tighten(net, lo, up, crown, fixed=fixed)
    assert stats["complete"] == 1
    xs = rng.uniform(lo, up, size=(40_000, 4))
    pre = [p.reshape(len(xs), -1) for p in net.pre_activations(xs)]
    follow = np.all(pre[0][:, act] > 0, axis=1) & np.all(pre[0][:, ina] <= 0, axis=1)
    assert follow.sum() > 20
    assert _inside(milp[:-1], [p[follow] for p in pre[:-1]])
    for (ml, mu), (ll, lu) in zip(milp[:-1], lp[:-1], strict=True):  # exact is never looser than the LP
        assert np.all(ml >= ll - 1e-6) and np.all(mu <= lu + 1e-6)
    # the fixed states cut the box: some bound of layer 1 is tighter than without them
    free, _ = lp_tighten(net, lo, up, crown_bounds(net, lo, up), exact=True)
    assert np.any(milp[1][0] > free[1][0] + 1e-6) or np.any(milp[1][1] < free[1][1] - 1e-6)


def test_lp_without_bound_rows_is_sound_and_never_tighter_than_with_them() -> None:
    net = relu_network((3, 12, 12, 12, 2), seed=7, bias_scale=CASE_BIAS)
    lo, up = -np.ones(3), np.ones(3)
    crown = crown_bounds(net, lo, up)
    with_rows, _ = lp_tighten(net, lo, up, crown, bound_rows=True)
    without, _ = lp_tighten(net, lo, up, crown, bound_rows=False)
    xs = np.random.default_rng(1).uniform(lo, up, size=(20_000, 3))
    pre = [p.reshape(len(xs), -1) for p in net.pre_activations(xs)]
    assert _inside(without[:-1], pre[:-1]) and _inside(with_rows[:-1], pre[:-1])
    for (wl, wu), (ol, ou) in zip(with_rows[:-1], without[:-1], strict=True):
        assert np.all(wl >= ol - 1e-6) and np.all(wu <= ou + 1e-6)


def test_box_bounds_keep_milp_bounds_and_later_methods_start_from_them() -> None:
    net = relu_network((3, 10, 10, 10, 2), seed=11, bias_scale=CASE_BIAS)
    lo, up = -np.ones(3), np.ones(3)
    box = BoxBounds(net, lo, up)
    alpha, _ = box.optimised()
    milp, stats = box.milp_tightened(deadline=float("inf"), to_layer=1)
    assert stats["lps"] > 0 and box.best is milp and box.milp_layers is milp
    for (al, au), (ml, mu) in zip(alpha, milp, strict=True):
        assert np.all(ml >= al) and np.all(mu <= au)
    lp, _ = box.tightened()
    assert box.best is lp
    for (ml, mu), (ll, lu) in zip(milp, lp, strict=True):
        assert np.all(ll >= ml) and np.all(lu <= mu)
    xs = np.random.default_rng(2).uniform(lo, up, size=(20_000, 3))
    assert _inside(lp, [p.reshape(len(xs), -1) for p in net.pre_activations(xs)] + [net.forward(xs)])


def test_verify_tightens_the_root_once_branch_and_bound_stalls(monkeypatch) -> None:
    net = relu_network((4, 16, 16, 16, 3), seed=0, bias_scale=CASE_BIAS)
    x0 = np.zeros(4)
    label = int(np.argmax(net.forward(x0[None])[0]))
    spec = robustness(x0, 0.3, label, 3)
    real = bab_module.bab_clause
    calls = []

    def stalls_first(*args, **kwargs):  # the first run stops as a stalled one would
        calls.append(args[3])
        if len(calls) == 1:
            return bab_module.BabOutcome("timeout", stats={"domains": 0, "max_depth": 0})
        return real(*args, **kwargs)

    monkeypatch.setattr(bab_module, "bab_clause", stalls_first)
    res = verify(net, spec, solver="highs", timeout=60, attack=False, quick_cap=0, milp_threads=2)
    assert res.stats["clauses_open_after_alpha"] == 1  # the premise: the bounds alone leave it open
    assert res.status == "verified"
    assert "milp_bounds" in res.stats and res.timings["milp_bounds"] > 0
    assert res.stats["milp_bounds"]["threads"] == 2
    roots = [b["root"] for b in res.stats["bab"]]
    assert roots[0] == "alpha" and roots[1:] and set(roots[1:]) == {"milp"}
    # the second run starts from bounds at least as tight as the first's
    for (a_lo, a_up), (m_lo, m_up) in zip(calls[0], calls[1], strict=True):
        assert np.all(m_lo >= a_lo) and np.all(m_up <= a_up)


def test_settled_neurons_are_marked_and_skipped() -> None:
    net = relu_network((4, 12, 12, 10, 3), seed=11, bias_scale=CASE_BIAS)
    lo, up = -np.ones(4), np.ones(4)
    crown = crown_bounds(net, lo, up)
    settled: dict = {}
    first, stats = lp_tighten(net, lo, up, crown, exact=True, to_layer=1, settled=settled)
    unstable = int(((crown[1][0] < 0) & (crown[1][1] > 0)).sum())
    assert stats["settled"] == unstable == int(settled[1].sum()) > 0
    again, stats2 = lp_tighten(net, lo, up, first, exact=True, to_layer=1, settled=settled)
    assert stats2["lps"] == 0 and np.array_equal(again[1][0], first[1][0])
    with pytest.raises(InvalidParameterError, match="settled"):
        lp_tighten(net, lo, up, crown, exact=True, to_layer=1, settled={1: np.zeros(3, bool)})


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan"), "half"])
def test_a_milp_share_outside_zero_to_one_is_refused(share) -> None:
    with pytest.raises(InvalidParameterError, match="milp_share"):
        VerifyOptions(milp_share=share)


@pytest.mark.parametrize("threads", [0, -2, 1.5, True, "2"])
def test_milp_threads_that_are_not_a_positive_count_are_refused(threads) -> None:
    with pytest.raises(InvalidParameterError, match="milp_threads"):
        VerifyOptions(milp_threads=threads)


def test_milp_threads_default_to_the_usable_cores(monkeypatch) -> None:
    import os

    assert VerifyOptions(milp_threads=3).milp_thread_count() == 3
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert 1 <= VerifyOptions().milp_thread_count() <= min(8, len(os.sched_getaffinity(0)))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a Ray worker with one CPU
    assert VerifyOptions().milp_thread_count() == 1


@pytest.mark.parametrize("exact", [False, True])
def test_threads_give_the_same_bounds_as_one(exact: bool) -> None:
    net = relu_network((4, 12, 12, 10, 3), seed=11, bias_scale=CASE_BIAS)
    lo, up = -np.ones(4), np.ones(4)
    crown = crown_bounds(net, lo, up)
    one, one_stats = lp_tighten(net, lo, up, crown, exact=exact)
    three, three_stats = lp_tighten(net, lo, up, crown, exact=exact, workers=3)
    assert three_stats == one_stats and one_stats["complete"] == 1 and one_stats["tightened"] > 0
    for (al, au), (bl, bu) in zip(one, three, strict=True):
        np.testing.assert_allclose(al, bl, rtol=0, atol=1e-6)
        np.testing.assert_allclose(au, bu, rtol=0, atol=1e-6)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_workers_that_are_not_a_positive_count_are_refused(workers) -> None:
    net = relu_network((3, 6, 6, 2), seed=1)
    lo, up = -np.ones(3), np.ones(3)
    with pytest.raises(InvalidParameterError, match="workers"):
        lp_tighten(net, lo, up, crown_bounds(net, lo, up), workers=workers)
