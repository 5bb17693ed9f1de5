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

from helpers import EXACT_MAX, SETTINGS, cases, exact_violation, sampled_violation
from hypothesis import given
from hypothesis import strategies as st

import verify
from verify.network import ReluNetwork
from verify.properties import Spec

STATUSES = {"verified": 0, "falsified": 0}


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
    assert sampled_violation(net, spec) is None, "verified, yet a sampled input violates the property"
    if sum(net.relu_sizes) <= EXACT_MAX:
        assert not exact_violation(net, spec), "verified, yet an activation pattern reaches the unsafe region"


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
