"""Property-based tests of verify() over random small ReLU networks, boxes and properties (hypothesis).

Two invariants, whatever the network, box or property:

* ``verified`` never coexists with a violation, found either exactly (enumerating every activation pattern
  and solving one LP per pattern with scipy, for networks with at most ``EXACT_MAX`` hidden neurons) or by
  dense sampling of the box (corners included);
* every ``falsified`` carries a counterexample that lies in the box and, re-run here through the network
  (float64) and its torch source (float32), lands in an unsafe clause.

Runs are derandomized (a fixed example sequence) with a bounded number of examples and no deadline, so CI
sees the same cases every time.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from torch import nn

import verify
from verify.network import ReluNetwork
from verify.properties import Spec, robustness

EXACT_MAX = 8
STATUSES = {"verified": 0, "falsified": 0}
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _network(n_in: int, hidden: list[int], n_out: int, seed: int) -> ReluNetwork:
    torch.manual_seed(seed)
    widths = [n_in, *hidden, n_out]
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    with torch.no_grad():  # larger biases than torch's default: more stable and dead neurons, as in practice
        for m in layers:
            if isinstance(m, nn.Linear):
                m.bias.mul_(2.0)
    return ReluNetwork.from_torch(nn.Sequential(*layers), (n_in,))


@st.composite
def cases(draw) -> tuple[ReluNetwork, Spec]:
    n_in = draw(st.integers(1, 3))
    hidden = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    n_out = draw(st.integers(2, 3))
    net = _network(n_in, hidden, n_out, draw(st.integers(0, 10_000)))
    coord = st.floats(-1.5, 1.5, allow_nan=False, allow_infinity=False, width=32)
    centre = np.array(draw(st.lists(coord, min_size=n_in, max_size=n_in)), dtype=np.float64)
    eps = draw(st.floats(0.0, 1.0, allow_nan=False, width=32))
    if draw(st.booleans()):  # robustness around the centre's own class (or a drawn one)
        label = int(np.argmax(net.forward(centre.reshape(1, -1))[0]))
        if draw(st.booleans()):
            label = draw(st.integers(0, n_out - 1))
        return net, robustness(centre, eps, label, n_out, domain=(-2.0, 2.0))
    # a random polytope clause (or two) over the outputs
    n_clauses = draw(st.integers(1, 2))
    clauses = []
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    for _ in range(n_clauses):
        rows = int(rng.integers(1, 3))
        clauses.append((rng.standard_normal((rows, n_out)), rng.standard_normal(rows)))
    return net, Spec(centre - eps, centre + eps, clauses, name="random polytope")


def _exact_violation(net: ReluNetwork, spec: Spec) -> bool:
    """Whether some input of the box maps into some unsafe clause: one LP per activation pattern."""
    n = net.n_inputs
    for pattern in itertools.product([0.0, 1.0], repeat=sum(net.relu_sizes)):
        m, c = np.eye(n), np.zeros(n)
        a_ub, b_ub, off = [], [], 0
        for k, size in enumerate(net.relu_sizes):
            zm, zc = net.weights[k] @ m, net.weights[k] @ c + net.biases[k]
            p = np.array(pattern[off:off + size])
            off += size
            sign = np.where(p > 0, -1.0, 1.0)  # active: -z <= 0; inactive: z <= 0
            a_ub.extend(sign[:, None] * zm)
            b_ub.extend(-sign * zc)
            m, c = zm * p[:, None], zc * p
        ym, yc = net.weights[-1] @ m, net.weights[-1] @ c + net.biases[-1]
        for a, b in spec.unsafe:
            res = linprog(np.zeros(n), A_ub=np.array([*a_ub, *(a @ ym)]), b_ub=np.array([*b_ub, *(b - a @ yc)]),
                          bounds=list(zip(spec.lower, spec.upper, strict=True)), method="highs")
            if res.status == 0:
                return True
    return False


def _sampled_violation(net: ReluNetwork, spec: Spec) -> np.ndarray | None:
    rng = np.random.default_rng(0)
    lo, up = spec.lower, spec.upper
    corners = lo + (up - lo) * np.array(list(itertools.product([0.0, 1.0], repeat=lo.size)))
    pts = np.vstack([lo + (up - lo) * rng.random((20_000, lo.size)), corners])
    ys = net.forward(pts)
    for a, b in spec.unsafe:
        inside = np.all(ys @ a.T < b - 1e-7, axis=1)  # strictly inside, so no rounding question
        if inside.any():
            return pts[int(np.argmax(inside))]
    return None


def _check(net: ReluNetwork, spec: Spec, res) -> None:
    assert res.status in ("verified", "falsified"), (res.status, res.message)
    if res.status == "falsified":
        cex = res.counterexample
        assert cex is not None and spec.contains(cex.x)
        assert spec.violated_by(net.forward(cex.x.reshape(1, -1))[0])
        assert spec.violated_by(net.run_source(cex.x.reshape(1, -1))[0])
        STATUSES["falsified"] += 1
        return
    STATUSES["verified"] += 1
    assert _sampled_violation(net, spec) is None, "verified, yet a sampled input violates the property"
    if sum(net.relu_sizes) <= EXACT_MAX:
        assert not _exact_violation(net, spec), "verified, yet an activation pattern reaches the unsafe region"


@SETTINGS
@given(cases(), st.sampled_from(["cbc", "highs"]))
def test_milp_answers_are_sound(case, solver):
    net, spec = case
    _check(net, spec, verify.verify(net, spec, solver=solver, timeout=30, attack=False, bab_share=0))


@SETTINGS
@given(cases())
def test_full_pipeline_answers_are_sound(case):
    net, spec = case
    _check(net, spec, verify.verify(net, spec, solver="highs", timeout=30, seed=1))


def test_both_answers_were_exercised():
    # The generated cases must include provable and refutable ones, else the tests above check little.
    if STATUSES["verified"] + STATUSES["falsified"] == 0:
        test_milp_answers_are_sound()
    assert STATUSES["verified"] >= 3 and STATUSES["falsified"] >= 3, STATUSES
