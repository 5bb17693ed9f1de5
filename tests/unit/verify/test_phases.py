"""verify()'s structure: VerifyOptions (validation, defaults, exclusive with keywords), the phase runner (order,
the first verdict ends the run), the Status type, and VerificationResult.save/load (round trip, typed errors).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import time
from typing import get_args

import numpy as np
import pytest
import torch
from torch import nn

import verify
from probe.core.artifacts import FORMAT_VERSION, write_json
from probe.core.errors import CorruptDataError, DataNotFoundError, InvalidParameterError, NeurospecError
from verify import api
from verify.api import NAP_BAB_SHARE
from verify.errors import ResourceLimitError, SolverError
from verify.network import ReluNetwork
from verify.properties import Spec, robustness
from verify.result import RESULT_FILE, STATUSES, Counterexample, Status, VerificationResult

PHASE_NAMES = ["attack", "bounds", "alpha", "milp_quick", "patterns", "bab", "lp_bounds", "milp"]


def _net(seed: int = 0, widths=(2, 5, 4, 3)) -> ReluNetwork:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return ReluNetwork.from_torch(nn.Sequential(*layers), (widths[0],))


def _always_violated() -> Spec:
    """0 @ y <= 1 holds for every output: every input is a counterexample (the attack finds one at once)."""
    return Spec(np.full(2, -1.0), np.full(2, 1.0), [(np.zeros((1, 3)), np.ones(1))])


def _never_violated() -> Spec:
    """0 @ y <= -1 holds for no output: the bounds alone prove it."""
    return Spec(np.full(2, -1.0), np.full(2, 1.0), [(np.zeros((1, 3)), -np.ones(1))])


def _spy_phases(monkeypatch) -> list[str]:
    """Replace api.PHASES by wrappers that record which phases ran, in order."""
    calls: list[str] = []

    def wrap(name, phase):
        def run(ctx):
            calls.append(name)
            return phase(ctx)
        return run

    monkeypatch.setattr(api, "PHASES", tuple((name, wrap(name, phase)) for name, phase in api.PHASES))
    return calls


# ---------------------------------------------------------------- VerifyOptions
def test_options_defaults_are_verifys_defaults():
    params = inspect.signature(verify.verify).parameters
    for f in dataclasses.fields(verify.VerifyOptions):
        assert params[f.name].default == f.default, f.name
    assert params["options"].default is None and params["bounds"].default is None


@pytest.mark.parametrize("bad", [0, -1, -0.5, float("nan"), "10", None])
def test_options_refuse_a_bad_timeout_like_verify(bad):
    net, spec = _net(), _never_violated()
    with pytest.raises(InvalidParameterError, match="timeout must be a positive number of seconds") as by_opts:
        verify.VerifyOptions(timeout=bad)
    with pytest.raises(InvalidParameterError) as by_verify:
        verify.verify(net, spec, timeout=bad)
    assert str(by_opts.value) == str(by_verify.value)


def test_options_refuse_unknown_and_missing_solvers(monkeypatch):
    with pytest.raises(SolverError, match="unknown solver 'gurobi'"):
        verify.VerifyOptions(solver="gurobi")
    with pytest.raises(InvalidParameterError, match="timeout"):  # timeout first, as verify() always did
        verify.VerifyOptions(solver="gurobi", timeout=0)
    import verify.solvers as solvers

    monkeypatch.setattr(solvers, "available_solvers", lambda: ["cbc"])
    with pytest.raises(SolverError, match="pip install highspy"):
        verify.VerifyOptions(solver="highs")


def test_options_are_frozen_and_resolve_bab_share():
    opts = verify.VerifyOptions(timeout=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.timeout = 10  # type: ignore[misc]
    plain = robustness(np.zeros(2), 0.1, 0, 3)
    nap = Spec(plain.lower, plain.upper, plain.unsafe, relu_states={0: (np.zeros(5, bool), np.zeros(5, bool))})
    assert opts.bab_share_for(plain) == 0.8 and opts.bab_share_for(nap) == NAP_BAB_SHARE
    assert verify.VerifyOptions(bab_share=0.3).bab_share_for(nap) == 0.3


def test_a_nap_query_skips_branch_and_bound_when_it_does_not_fit_but_a_robustness_query_is_refused():
    net = _net()
    plain = robustness(np.zeros(net.n_inputs), 0.1, 0, net.n_outputs)
    sizes = net.relu_sizes
    nap = Spec(plain.lower, plain.upper, plain.unsafe,
               relu_states={0: (np.zeros(sizes[0], bool), np.zeros(sizes[0], bool))})
    res = verify.verify(net, nap, solver="highs", timeout=20, bab_memory=1)  # the MILP decides alone
    assert res.status in ("verified", "falsified") and "bab" not in res.timings
    with pytest.raises(ResourceLimitError, match="memory cap"):
        verify.verify(net, nap, solver="highs", timeout=20, bab_memory=1, bab_share=0.5)
    with pytest.raises(ResourceLimitError, match="memory cap"):
        verify.verify(net, plain, solver="highs", timeout=20, bab_memory=1)


def test_options_replace_the_keywords_but_not_both():
    net, spec = _net(), _never_violated()
    by_keywords = verify.verify(net, spec, timeout=20, attack=False)
    by_options = verify.verify(net, spec, options=verify.VerifyOptions(timeout=20, attack=False))
    assert (by_options.status, by_options.method, by_options.stats) == (
        by_keywords.status, by_keywords.method, by_keywords.stats)
    assert "attack" not in by_options.timings
    with pytest.raises(InvalidParameterError, match=r"not both.*\['attack', 'timeout'\]"):
        verify.verify(net, spec, timeout=5, attack=False, options=verify.VerifyOptions())
    with pytest.raises(InvalidParameterError, match="VerifyOptions"):
        verify.verify(net, spec, options={"timeout": 5})  # type: ignore[arg-type]


# ---------------------------------------------------------------- phases
def test_phase_names_and_order():
    assert [name for name, _ in api.PHASES] == PHASE_NAMES


def test_a_spec_decided_by_the_attack_never_reaches_the_milp(monkeypatch):
    from verify.milp import MilpEncoding

    def boom(*args, **kwargs):
        raise AssertionError("the MILP must not run")

    monkeypatch.setattr(MilpEncoding, "__init__", boom)
    calls = _spy_phases(monkeypatch)
    res = verify.verify(_net(), _always_violated(), timeout=30)
    assert (res.status, res.method) == ("falsified", "attack")
    assert calls == ["attack"]
    assert list(res.timings) == ["attack", "total"]
    assert "binaries" not in res.stats and "solves" not in res.stats


def test_a_spec_decided_by_the_bounds_skips_every_later_phase(monkeypatch):
    calls = _spy_phases(monkeypatch)
    res = verify.verify(_net(), _never_violated(), timeout=30, attack=False)
    assert (res.status, res.method) == ("verified", "bounds")
    assert calls == ["attack", "bounds"]  # the attack phase runs, but does nothing with attack=False
    assert list(res.timings) == ["bounds", "total"]
    assert res.stats["clauses_open_after_bounds"] == 0 and "binaries" not in res.stats


def test_without_the_attack_the_milp_decides_after_the_bounds(monkeypatch):
    calls = _spy_phases(monkeypatch)
    res = verify.verify(_net(), _always_violated(), timeout=30, attack=False)
    assert (res.status, res.method) == ("falsified", "milp")
    assert calls == ["attack", "bounds", "alpha", "milp_quick"]  # the quick pass finds it
    assert list(res.timings) == ["bounds", "alpha", "build", "milp", "total"]  # in the order they ran
    assert res.stats["binaries"] >= 0 and res.stats["solves"]
    cex = res.counterexample
    assert _always_violated().contains(cex.x)


def test_an_answer_after_the_limit_is_a_timeout(monkeypatch):
    # the final assembly turns a late answer into a timeout, keeping the method that found it
    def late(ctx):
        time.sleep(0.05)
        return api.Verdict("verified", "bounds", message="m")

    monkeypatch.setattr(api, "PHASES", (("late", late),))
    res = verify.verify(_net(), _never_violated(), timeout=0.01)
    assert (res.status, res.method, res.counterexample) == ("timeout", "bounds", None)
    assert res.message == "answer came after the 0.01 s limit; m" and list(res.timings) == ["total"]


# ---------------------------------------------------------------- Status
def test_status_is_a_plain_string_literal():
    assert get_args(Status) == STATUSES == ("verified", "falsified", "timeout", "unknown", "error")
    res = VerificationResult("verified", "bounds")
    assert res.status == "verified" and isinstance(res.status, str) and res.vnncomp == "unsat"
    with pytest.raises(ValueError, match="status must be one of"):
        VerificationResult("sat")  # type: ignore[arg-type]


# ---------------------------------------------------------------- save / load
def test_save_and_load_a_real_counterexample(tmp_path):
    res = verify.verify(_net(), _always_violated(), timeout=30)
    assert res.status == "falsified"
    path = res.save(tmp_path / "run")
    assert path == tmp_path / "run" / RESULT_FILE and sorted((tmp_path / "run").iterdir()) == [path]
    raw = json.loads(path.read_text())
    assert raw["neurospec_format_version"] == FORMAT_VERSION and raw["format"] == "neurospec.verification_result"
    back = VerificationResult.load(tmp_path / "run")
    assert (back.status, back.method, back.message, back.solver) == (res.status, res.method, res.message, res.solver)
    assert back.timings == res.timings and back.stats == res.stats
    for name in ("x", "y", "y_source"):
        got, want = getattr(back.counterexample, name), getattr(res.counterexample, name)
        assert got.dtype == np.float64 and np.array_equal(got, np.asarray(want, dtype=np.float64))
    assert back.counterexample.y_onnx is None
    assert back.vnncomp_text() == res.vnncomp_text()


def test_save_and_load_every_field(tmp_path):
    cex = Counterexample(x=np.array([0.25, -1.0]), y=np.array([1.5, -2.0, 0.0]),
                         y_source=np.array([1.5, -2.0, 0.0], dtype=np.float32), y_onnx=np.array([1.5, -2.0, 1e-9]))
    res = VerificationResult("falsified", "bab", cex, "clause 2", {"bounds": 0.125, "total": np.float64(1.5)},
                             {"unstable": [np.int64(3), 4], "alpha": {"complete": np.int64(1)}, "pair": (1, 2),
                              "root_bound": -math.inf, "shared_bounds": True}, "highs")
    back = VerificationResult.load(res.save(tmp_path).parent)
    assert (back.status, back.method, back.message, back.solver) == ("falsified", "bab", "clause 2", "highs")
    assert back.timings == {"bounds": 0.125, "total": 1.5}
    assert back.stats == {"unstable": [3, 4], "alpha": {"complete": 1}, "pair": [1, 2], "root_bound": -math.inf,
                          "shared_bounds": True}
    assert type(back.stats["unstable"][0]) is int
    for name in ("x", "y", "y_source", "y_onnx"):
        assert np.array_equal(getattr(back.counterexample, name), getattr(cex, name)), name


def test_save_and_load_without_a_counterexample(tmp_path):
    res = VerificationResult("timeout", message="the solver hit the time limit on clause(s) [0]",
                             timings={"total": 2.5}, stats={"clauses": 1}, solver="cbc")
    res.save(tmp_path)
    back = VerificationResult.load(tmp_path)
    assert back == res and back.counterexample is None
    VerificationResult("verified", "milp").save(tmp_path)  # overwrites
    assert VerificationResult.load(tmp_path) == VerificationResult("verified", "milp")


def test_load_a_missing_result(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        VerificationResult.load(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / RESULT_FILE) in str(err.value)
    assert "VerificationResult.save" in str(err.value)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, NeurospecError)
    path = VerificationResult("verified").save(tmp_path)
    with pytest.raises(DataNotFoundError, match="is a file; pass the folder"):
        VerificationResult.load(path)


def _stamped(**fields) -> dict:
    return {"format": "neurospec.verification_result", "status": "verified", **fields}


@pytest.mark.parametrize("content,match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "does not hold a JSON object"),
    ({"status": "verified"}, "not a verification result"),
    ({"format": "neurospec.nap", "status": "verified"}, "not a verification result"),
    (_stamped(neurospec_format_version=FORMAT_VERSION + 1), "upgrade neurospec"),
    (_stamped(status="maybe"), "not a valid verification result"),
    (_stamped(status="falsified"), "not a valid verification result"),
    (_stamped(status="falsified", counterexample={"x": [0.0]}), "not a valid verification result"),
    (_stamped(counterexample=[1, 2]), "not a valid verification result"),
    (_stamped(timings=[1, 2]), "not a valid verification result"),
    ({"format": "neurospec.verification_result"}, "not a valid verification result"),
])
def test_load_a_corrupt_result(tmp_path, content, match):
    path = tmp_path / RESULT_FILE
    if isinstance(content, str):
        path.write_text(content)
    else:
        write_json(path, content)
    with pytest.raises(CorruptDataError, match=match) as err:
        VerificationResult.load(tmp_path)
    assert str(path) in str(err.value) and "VerificationResult.save" in str(err.value)


def test_nap_robustness_refuses_naps_mined_on_another_network():
    import torch
    from helpers import mlp

    from probe import nap
    from verify import nap_robustness
    from verify.errors import SpecError
    from verify.network import ReluNetwork

    mined_on, other = mlp([4, 8, 8, 3], seed=0), mlp([4, 8, 8, 8, 3], seed=0)
    x = torch.randn(64, 4)
    naps = nap.mine(mined_on, [(x, mined_on(x).argmax(1))], delta=1.0, only_correct=False, verbose=False)
    net = ReluNetwork.from_torch(other, input_shape=(4,))
    with pytest.raises(SpecError, match="mined on a model with ReLU layers"):
        nap_robustness(net, naps, classes=[0], timeout=5)


def test_the_quick_pass_ends_at_the_first_clause_that_runs_to_its_limit(monkeypatch):
    from verify.milp import ClauseOutcome, MilpEncoding
    from verify.solvers import SolveOutcome

    tried: list[tuple[int, float]] = []

    def limited(self, index, solver, time_limit, margin=0.0):  # every quick try runs to its limit
        tried.append((index, time_limit))
        return ClauseOutcome("timeout", None, SolveOutcome("timeout", None, time_limit, "Time limit reached", 0))

    monkeypatch.setattr(MilpEncoding, "solve_clause", limited)
    net = _net(widths=(2, 8, 8, 3))
    spec = Spec(np.full(2, -1.0), np.full(2, 1.0), [(np.array([[1.0, -1.0, 0.0]]), np.array([v]))
                                                    for v in (50.0, 60.0, 70.0)])  # never empty
    ctx = api.VerifyContext(net, spec, api.VerifyOptions(timeout=30, attack=False, alpha_share=0.0),
                            t0=time.perf_counter(), deadline=time.perf_counter() + 30, stats={"clauses": 3})
    assert api._bounds_phase(ctx) is None and len(ctx.open_clauses) == 3
    assert api._quick_milp_phase(ctx) is None
    assert [i for i, _ in tried] == [ctx.open_clauses[0]]  # one try, then the others wait for the next phases
    assert ctx.pending == ctx.open_clauses and ctx.stats["quick_pass_stopped"] == 2
