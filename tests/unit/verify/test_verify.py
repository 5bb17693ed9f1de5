"""verify(): soundness against exact oracles on tiny networks, counterexample re-checks, timeouts, bad input.

The oracle (``helpers.exact_violation``) enumerates every activation pattern of the hidden ReLUs and solves
one LP per pattern with scipy's own LP solver (independent of PuLP/CBC): the property is violated iff some
pattern's polytope (inside the box, consistent with the pattern) reaches an unsafe clause.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import exact_violation, relu_network
from torch import nn

import verify
from probe.core.errors import InvalidParameterError
from verify.errors import NetworkError, SolverError, SpecError
from verify.network import ReluNetwork
from verify.properties import Spec, robustness

WIDTHS = (2, 5, 4, 3)


def _random_spec(net: ReluNetwork, rng: np.random.Generator) -> Spec:
    centre = rng.uniform(-1, 1, net.n_inputs)
    eps = rng.uniform(0.05, 0.8)
    with torch.no_grad():
        label = int(np.argmax(net.forward(centre.reshape(1, -1))[0]))
    return robustness(centre, eps, label, net.n_outputs, domain=(-2, 2))


@pytest.mark.parametrize("solver", ["cbc", "highs"])
@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_pattern_enumeration_oracle(seed, solver):
    net = relu_network(WIDTHS, seed)
    spec = _random_spec(net, np.random.default_rng(seed))
    truth = exact_violation(net, spec)
    res = verify.verify(net, spec, solver=solver, timeout=30)
    assert res.status in ("verified", "falsified"), res
    assert (res.status == "falsified") == truth, (res.status, res.method, truth)
    if res.status == "falsified":
        cex = res.counterexample
        assert spec.contains(cex.x) and spec.violated_by(cex.y_source)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_milp_alone_agrees_with_oracle(seed):
    # No attack: every answer comes from bounds or the MILP.
    net = relu_network((3, 6, 5, 4), 100 + seed)
    spec = _random_spec(net, np.random.default_rng(seed))
    res = verify.verify(net, spec, timeout=30, attack=False)
    assert (res.status == "falsified") == exact_violation(net, spec)


@pytest.mark.parametrize("seed", range(20))
def test_verified_never_meets_a_sampled_violation(seed):
    net = relu_network((4, 8, 8, 3), 200 + seed)
    rng = np.random.default_rng(seed)
    spec = _random_spec(net, rng)
    res = verify.verify(net, spec, timeout=30)
    pts = rng.uniform(spec.lower, spec.upper, size=(20_000, net.n_inputs))
    ys = net.forward(pts)
    sampled_violation = any(spec.violated_by(y) for y in ys)
    if res.status == "verified":
        assert not sampled_violation
    if sampled_violation:
        assert res.status == "falsified"


def test_nap_states_constrain_the_milp():
    net = relu_network((2, 6, 3), 7)
    spec = Spec(np.full(2, -1.0), np.full(2, 1.0), [(np.array([[1.0, -1.0, 0.0]]), np.zeros(1))])
    free = verify.verify(net, spec, timeout=30, attack=False)
    # Fixing every hidden neuron to the state it has at one point leaves only inputs in that linear region.
    x0 = np.zeros((1, 2))
    z = net.pre_activations(x0)[0][0]
    fixed = Spec(spec.lower, spec.upper, spec.unsafe, relu_states={0: (z > 0, z <= 0)})
    res = verify.verify(net, fixed, timeout=30)
    assert res.status in ("verified", "falsified")
    if res.status == "falsified":
        pre = net.pre_activations(res.counterexample.x.reshape(1, -1))[0][0]
        assert np.all(pre[z > 0] > 0) and np.all(pre[z <= 0] <= 0)
    if free.status == "verified":
        assert res.status == "verified"


def test_result_strings():
    net = relu_network(WIDTHS, 1)
    spec = _random_spec(net, np.random.default_rng(1))
    res = verify.verify(net, spec, timeout=30)
    text = res.vnncomp_text()
    assert text.splitlines()[0] in ("sat", "unsat")
    if res.status == "falsified":
        assert "(X_0 " in text and "(Y_0 " in text


# ---------------------------------------------------------------- bad input
def test_bad_timeout_and_solver():
    net = relu_network(WIDTHS, 0)
    spec = _random_spec(net, np.random.default_rng(0))
    for bad in (0, -1, float("nan")):
        with pytest.raises(InvalidParameterError, match="timeout"):
            verify.verify(net, spec, timeout=bad)
    with pytest.raises(SolverError, match="gurobi"):
        verify.verify(net, spec, solver="gurobi")


def test_spec_size_mismatch_and_empty_box():
    net = relu_network(WIDTHS, 0)
    with pytest.raises(SpecError, match="3 inputs but the network has 2"):
        verify.verify(net, robustness(np.zeros(3), 0.1, 0, 3), timeout=5)
    with pytest.raises(SpecError, match="empty input box"):
        Spec(np.array([1.0, 0.0]), np.array([0.0, 1.0]), [(np.ones((1, 3)), np.zeros(1))])


def test_not_a_relu_network():
    with pytest.raises(NetworkError, match="ReluNetwork"):
        verify.verify(nn.Linear(2, 2), robustness(np.zeros(2), 0.1, 0, 2), timeout=5)


def test_missing_solver_says_how_to_install(monkeypatch):
    import verify.solvers as solvers

    monkeypatch.setattr(solvers, "available_solvers", lambda: ["cbc"])
    net = relu_network(WIDTHS, 0)
    with pytest.raises(SolverError, match="pip install highspy"):
        verify.verify(net, _random_spec(net, np.random.default_rng(0)), solver="highs", timeout=5)


def test_timeout_is_reported_not_answered():
    # A deep network with a wide box cannot be settled in 0.3 s: the answer must be timeout (or a real
    # counterexample from the attack), never "verified".
    net = relu_network((10, 40, 40, 40, 40, 2), 5)
    spec = robustness(np.zeros(10), 1.0, 0, 2, domain=(-1, 1))
    res = verify.verify(net, spec, timeout=0.3, attack=False)
    assert res.status in ("timeout", "falsified"), res
    assert res.timings["total"] < 5


# ---------------------------------------------------------------- shared bounds
def test_shared_bounds_give_the_same_answers_and_tighten_once():
    from verify.bounds import BoxBounds

    net = relu_network((3, 5, 4, 4), 11)
    spec = robustness(np.zeros(3), 0.9, 0, 4, domain=(-1, 1))
    shared = BoxBounds(net, spec.lower, spec.upper)
    for j in (1, 2, 3):
        one = robustness(np.zeros(3), 0.9, 0, 4, domain=(-1, 1), targets=[j])
        alone = verify.verify(net, one, timeout=30, attack=False)
        with_shared = verify.verify(net, one, timeout=30, attack=False, bounds=shared)
        assert with_shared.stats["shared_bounds"]
        assert alone.status == with_shared.status == ("falsified" if exact_violation(net, one) else "verified")
    first, stats = shared.tightened()
    lps = stats["lps"]
    again, stats = shared.tightened()
    assert stats["complete"] and stats["lps"] == lps and again is first  # computed once, then reused


def test_shared_bounds_of_another_box_are_refused():
    from verify.bounds import BoxBounds

    net = relu_network(WIDTHS, 0)
    spec = _random_spec(net, np.random.default_rng(0))
    other = BoxBounds(net, spec.lower - 0.1, spec.upper)
    with pytest.raises(SpecError, match="BoxBounds computed for this network"):
        verify.verify(net, spec, timeout=5, bounds=other, attack=False)
    with pytest.raises(SpecError, match="BoxBounds"):
        verify.verify(net, spec, timeout=5, bounds="not bounds", attack=False)


def test_the_hinge_loss_of_a_clause_is_zero_exactly_where_its_max_is_not_positive():
    from verify.attack import _clause_losses

    gen = torch.Generator().manual_seed(0)
    a = np.array([[1.0, -1.0, 0.0], [0.0, -1.0, 1.0]])
    spec = Spec(np.zeros(2), np.ones(2), [(a, np.zeros(2)), (a[:1], np.array([0.5]))])
    y = torch.randn((500, 3), generator=gen, dtype=torch.float64)
    y[:50, 1] = y[:50, [0, 2]].max(1).values + 0.1  # some outputs inside the first clause
    hinge, top = _clause_losses(spec, y, hinge=True), _clause_losses(spec, y)
    assert torch.equal(hinge == 0, top <= 0)
    assert bool((hinge >= top.clamp(min=0)).all())  # the sum of violated rows bounds the largest one


def test_a_network_built_from_weights_gets_its_counterexample_rechecked_in_float32():
    # y = x0 - x1 on [0, 1]^2 through one ReLU layer: "y >= 0" is falsified (x1 > x0); the network has no
    # source module, so the re-check runs its weights in float32 instead of failing
    net = ReluNetwork([np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, -1.0]])], [np.zeros(2), np.zeros(1)])
    spec = Spec(np.zeros(2), np.ones(2), [(np.array([[1.0]]), np.array([-0.5]))])  # unsafe: y <= -0.5
    res = verify.verify(net, spec, solver="highs", timeout=10)
    assert res.status == "falsified", res
    cex = res.counterexample
    assert cex.x[0] - cex.x[1] <= -0.5 + 1e-9
    assert np.allclose(cex.y_source, cex.y, atol=1e-6)
