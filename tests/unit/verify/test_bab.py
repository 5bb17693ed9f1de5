"""Branch and bound (verify.bab): sound and complete on small networks, its bounds equal CROWN's at the root.

The random networks and properties are those of ``test_verify_hypothesis`` (``helpers.cases``); each unsafe
clause is decided by :func:`verify.bab.bab_clause` alone and compared with the exact oracle (one LP per activation pattern) or,
on larger networks, dense sampling.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from helpers import CASE_BIAS, EXACT_MAX, SETTINGS, cases, exact_violation, relu_network, sampled_violation
from hypothesis import given
from hypothesis import strategies as st

import verify
from probe.core.errors import InvalidParameterError
from verify import bab
from verify.bounds import BoxBounds, Engine, TorchNetwork, crown_bounds
from verify.properties import Spec, nap_robustness_spec, robustness

SEEN = {"verified": 0, "falsified": 0}


@SETTINGS
@given(cases(), st.sampled_from([0, 5]))
def test_bab_clause_is_sound_and_complete(case, iters):
    net, spec = case
    root = BoxBounds(net, spec.lower, spec.upper).best[:-1]
    for i, clause in enumerate(spec.unsafe):
        one = Spec(spec.lower, spec.upper, [clause])
        out = bab.bab_clause(net, spec, i, root, deadline=time.perf_counter() + 60, iters=iters, batch=4)
        assert out.status in ("verified", "falsified"), out.stats
        SEEN[out.status] += 1
        if out.status == "falsified":
            assert one.contains(out.x)
            assert one.violated_by(net.forward(out.x.reshape(1, -1))[0])
            continue
        assert sampled_violation(net, one) is None, "verified, yet a sampled input violates the clause"
        if sum(net.relu_sizes) <= EXACT_MAX:
            assert not exact_violation(net, one), "verified, yet an activation pattern reaches the clause"


def test_bab_saw_both_answers():
    if SEEN["verified"] + SEEN["falsified"] == 0:
        test_bab_clause_is_sound_and_complete()
    assert SEEN["verified"] >= 3 and SEEN["falsified"] >= 3, SEEN


def test_batched_crown_equals_crown_bounds():
    # From the same first-layer bounds, the batched back-substitution gives CROWN's lower bounds exactly
    # (crown_bounds also intersects with interval bounds, so its upper bounds can only be tighter).
    net = relu_network((6, 12, 10, 8, 3), seed=3, bias_scale=CASE_BIAS)
    lo, up = -np.ones(6), np.ones(6)
    ref = crown_bounds(net, lo, up)
    eng = Engine(TorchNetwork(net), lo, up)
    b_lo = [torch.full((1, n), -1e9, dtype=torch.float64) for n in net.relu_sizes]
    b_up = [torch.full((1, n), 1e9, dtype=torch.float64) for n in net.relu_sizes]
    b_lo[0][0], b_up[0][0] = torch.as_tensor(ref[0][0]), torch.as_tensor(ref[0][1])
    eng.layer_bounds(b_lo, b_up, 1)
    for k in range(len(net.relu_sizes)):
        low = b_lo[k][0].numpy()
        assert np.all(low <= ref[k][1] + 1e-12)
        xs = lo + (up - lo) * np.random.default_rng(k).random((5000, 6))
        z = net.pre_activations(xs)[k].reshape(5000, -1)
        assert np.all(z >= low - 1e-12) and np.all(z <= b_up[k][0].numpy() + 1e-12)
    # the first hidden layer after the input one is identical to CROWN's (no IBP difference there)
    np.testing.assert_allclose(b_lo[1][0].numpy(), np.maximum(b_lo[1][0].numpy(), ref[1][0]), atol=1e-12)


def test_bab_respects_the_deadline():
    net = relu_network((20, 40, 40, 40, 4), seed=1, bias_scale=CASE_BIAS)
    spec = robustness(np.zeros(20), 0.9, 0, 4)
    root = BoxBounds(net, spec.lower, spec.upper).best[:-1]
    start = time.perf_counter()
    out = bab.bab_clause(net, spec, 0, root, deadline=start - 1.0)
    assert out.status in ("timeout", "verified", "falsified")
    assert time.perf_counter() - start < 5.0


def test_verify_reports_bab_as_the_method_on_a_split_proof():
    # seed 13, eps 0.4: alpha-CROWN leaves one clause open (bound -0.009); two splits prove it
    net = relu_network((8, 24, 24, 24, 3), seed=13, bias_scale=CASE_BIAS)
    x0 = np.zeros(8)
    spec = robustness(x0, 0.4, int(np.argmax(net.forward(x0.reshape(1, -1))[0])), 3)
    res = verify.verify(net, spec, solver="highs", timeout=30, quick_cap=0)  # no quick MILP pass first
    assert (res.status, res.method) == ("verified", "bab"), (res.status, res.method, res.message)
    assert res.stats["bab"][0]["splits"] >= 1 and "bab" in res.timings
    assert sampled_violation(net, spec) is None
    # without branch and bound the MILP proves it too
    assert verify.verify(net, spec, solver="highs", timeout=30, bab_share=0).method == "milp"


@pytest.mark.parametrize("splits,intermediate", [(3, True), (1, False)])
def test_bab_variants_agree_with_the_exact_oracle(monkeypatch, splits, intermediate):
    # multi-neuron splits and BaB without intermediate-bound recomputation are sound and complete too
    monkeypatch.setattr(bab, "MAX_SPLITS", splits)
    answers = set()
    for seed in range(6):
        net = relu_network((3, 4, 4, 2), seed=seed, bias_scale=CASE_BIAS)
        spec = robustness(np.zeros(3), 0.8, 0, 2)
        root = BoxBounds(net, spec.lower, spec.upper).best[:-1]
        out = bab.bab_clause(net, spec, 0, root, deadline=time.perf_counter() + 60, intermediate=intermediate,
                             batch=4)
        assert out.status in ("verified", "falsified")
        answers.add(out.status)
        assert (out.status == "falsified") == exact_violation(net, Spec(spec.lower, spec.upper, spec.unsafe[:1]))
    assert answers == {"verified", "falsified"}


def test_bab_with_fixed_relu_states_agrees_with_the_milp():
    # NAP-style properties (fixed ReLU states) through BaB (forced with bab_share, no quick MILP pass)
    # get the MILP's answer; fixed states become beta-multiplied constraints of every domain
    seen, methods = set(), set()
    for seed in range(8):
        net = relu_network((3, 6, 6, 3), seed=seed, bias_scale=CASE_BIAS)
        rng = np.random.default_rng(seed)
        act = rng.random(6) < 0.3
        ina = ~act & (rng.random(6) < 0.3)
        spec = nap_robustness_spec(-np.ones(3), np.ones(3), {0: (act, ina)}, 0, 3)
        by_bab = verify.verify(net, spec, solver="highs", timeout=30, attack=False, quick_cap=0, bab_share=1.0)
        by_milp = verify.verify(net, spec, solver="highs", timeout=30, attack=False, bab_share=0)
        assert by_bab.status == by_milp.status, (seed, by_bab.status, by_milp.status, by_bab.message)
        seen.add(by_bab.status)
        methods.add(by_bab.method)
    assert seen == {"verified", "falsified"}, seen
    assert "bab" in methods, methods


def test_a_failed_quick_milp_try_is_retried_not_an_error(monkeypatch):
    # CBC once answered "Not Solved" before its limit in the quick pass on a loaded machine; that must not
    # end the query with `error` while time is left for the full MILP
    from verify.milp import ClauseOutcome, MilpEncoding
    from verify.solvers import SolveOutcome

    original = MilpEncoding.solve_clause
    calls = []

    def flaky(self, index, solver, time_limit, margin=0.0):
        calls.append(index)
        if len(calls) == 1:
            return ClauseOutcome("error", None, SolveOutcome("error", None, 0.01, "Not Solved", 0))
        return original(self, index, solver, time_limit, margin)

    monkeypatch.setattr(MilpEncoding, "solve_clause", flaky)
    net = relu_network((8, 24, 24, 24, 3), seed=13, bias_scale=CASE_BIAS)
    x0 = np.zeros(8)
    spec = robustness(x0, 0.4, int(np.argmax(net.forward(x0.reshape(1, -1))[0])), 3)
    res = verify.verify(net, spec, solver="highs", timeout=30, bab_share=0)
    assert (res.status, res.method) == ("verified", "milp"), res.message
    assert len(calls) >= 2


def test_not_solved_after_half_the_limit_is_a_timeout(monkeypatch):
    # a "Not Solved" with no solution is the limit's doing once half of it has passed; before that it is a
    # failure (e.g. HiGHS refusing a thread setting in 0.04 s)
    import pulp

    from verify import solvers

    prob = pulp.LpProblem("p", pulp.LpMinimize)
    prob += prob.add_variable("x", 0, 1)

    def fake_solve(self, backend, seconds):
        self.status, self.sol_status = pulp.LpStatusNotSolved, pulp.LpSolutionNoSolutionFound
        clock[0] += seconds

    clock = [0.0]
    monkeypatch.setattr(solvers.time, "perf_counter", lambda: clock[0])
    for seconds, expected in ((0.7, "timeout"), (0.1, "error")):
        monkeypatch.setattr(pulp.LpProblem, "solve", lambda self, backend, s=seconds: fake_solve(self, backend, s))
        assert solvers.solve(prob, "highs", time_limit=1.0).status == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="branch and bound on CUDA: needs a GPU, and this machine "
                                                          "has none")
def test_bab_on_cuda_agrees_with_the_exact_oracle_and_the_cpu():
    # the same searches on the GPU: sound and complete (exact oracle), the CPU's answers, and NAP-style fixed
    # states through verify(device="cuda") agree with the MILP
    answers = set()
    for seed in range(6):
        net = relu_network((3, 4, 4, 2), seed=seed, bias_scale=CASE_BIAS)
        spec = robustness(np.zeros(3), 0.8, 0, 2)
        root = BoxBounds(net, spec.lower, spec.upper).best[:-1]
        out = {dev: bab.bab_clause(net, spec, 0, root, deadline=time.perf_counter() + 60, batch=4, device=dev)
               for dev in ("cpu", "cuda")}
        assert out["cuda"].status == out["cpu"].status, seed
        assert (out["cuda"].status == "falsified") == exact_violation(net, Spec(spec.lower, spec.upper,
                                                                                spec.unsafe[:1]))
        answers.add(out["cuda"].status)
    assert answers == {"verified", "falsified"}
    for seed in range(4):
        net = relu_network((3, 6, 6, 3), seed=seed, bias_scale=CASE_BIAS)
        rng = np.random.default_rng(seed)
        act = rng.random(6) < 0.3
        ina = ~act & (rng.random(6) < 0.3)
        spec = nap_robustness_spec(-np.ones(3), np.ones(3), {0: (act, ina)}, 0, 3)
        by_bab = verify.verify(net, spec, solver="highs", timeout=30, attack=False, quick_cap=0, bab_share=1.0,
                               device="cuda")
        by_milp = verify.verify(net, spec, solver="highs", timeout=30, attack=False, bab_share=0)
        assert by_bab.status == by_milp.status, (seed, by_bab.status, by_milp.status, by_bab.message)


def test_the_largest_batch_defaults_by_device(monkeypatch):
    # no max_batch: the device type's MAX_BATCH (at least the first batch); an explicit one below batch is refused
    monkeypatch.setitem(bab.MAX_BATCH, "cpu", 2)
    net = relu_network((3, 4, 4, 2), seed=0, bias_scale=CASE_BIAS)
    spec = robustness(np.zeros(3), 0.8, 0, 2)
    root = BoxBounds(net, spec.lower, spec.upper).best[:-1]
    out = bab.bab_clause(net, spec, 0, root, deadline=time.perf_counter() + 30, batch=4)
    assert out.status in ("verified", "falsified")
    with pytest.raises(InvalidParameterError, match="max_batch"):
        bab.bab_clause(net, spec, 0, root, deadline=time.perf_counter() + 30, batch=4, max_batch=2)
