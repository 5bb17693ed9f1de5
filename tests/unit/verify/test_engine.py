"""The bound engine (verify.bounds.engine) against exact oracles.

Random small networks; domains with random split signs; random slopes (alpha) and split multipliers
(beta). Every bound the engine gives must lie below the true minimum over the inputs of the box that follow
the domain's splits, found by enumerating activation patterns (one LP each, scipy's HiGHS). A batch of many
domains gives what each domain gives alone; CUDA gives what the CPU gives when a GPU is present.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch
from helpers import CASE_BIAS, relu_network
from scipy.optimize import linprog

from probe.core.errors import InvalidParameterError
from verify import VerifyOptions, bab
from verify.bounds import BoxBounds, Engine, TorchNetwork, crown_bounds, lp_tighten
from verify.bounds.engine import relax
from verify.errors import ResourceLimitError
from verify.properties import robustness


def _exact_min(net, c: np.ndarray, lo: np.ndarray, up: np.ndarray, signs: list[np.ndarray]) -> float:
    """min of ``c @ net(x)`` over ``lo <= x <= up`` with ``sign * z >= 0`` for split neurons (``inf`` when no
    input follows the splits): every activation pattern consistent with the splits, one LP each."""
    n = net.n_inputs
    best = np.inf
    flat_signs = np.concatenate(signs)
    for pattern in itertools.product([0.0, 1.0], repeat=sum(net.relu_sizes)):
        p_all = np.array(pattern)
        if np.any((flat_signs > 0) & (p_all == 0)) or np.any((flat_signs < 0) & (p_all == 1)):
            continue
        m, k_c = np.eye(n), np.zeros(n)
        a_ub, b_ub, off = [], [], 0
        for k, size in enumerate(net.relu_sizes):
            zm, zc = net.weights[k] @ m, net.weights[k] @ k_c + net.biases[k]
            p = p_all[off:off + size]
            off += size
            sign = np.where(p > 0, -1.0, 1.0)  # active: -z <= 0; inactive: z <= 0
            a_ub.extend(sign[:, None] * zm)
            b_ub.extend(-sign * zc)
            m, k_c = zm * p[:, None], zc * p
        obj = c @ net.weights[-1] @ m
        const = c @ (net.weights[-1] @ k_c + net.biases[-1])
        res = linprog(obj, A_ub=np.array(a_ub), b_ub=np.array(b_ub), bounds=list(zip(lo, up, strict=True)),
                      method="highs")
        if res.status == 0:
            best = min(best, float(res.fun + const))
    return best


def _domains(net, lo, up, n_domains: int, rng):
    """Random domains: CROWN bounds of the box, some unstable neurons split (bounds clipped at 0)."""
    root = crown_bounds(net, lo, up)[:-1]
    d_lo, d_up, signs = [], [], []
    for _ in range(n_domains):
        ls, us, ss = [], [], []
        for l_, u_ in root:
            s = np.zeros(l_.size)
            unst = np.flatnonzero((l_ < 0) & (u_ > 0))
            pick = unst[rng.random(unst.size) < 0.4]
            s[pick] = rng.choice([-1.0, 1.0], size=pick.size)
            ls.append(np.where(s > 0, np.maximum(l_, 0), l_))
            us.append(np.where(s < 0, np.minimum(u_, 0), u_))
            ss.append(s)
        d_lo.append(ls)
        d_up.append(us)
        signs.append(ss)
    def stack(v, j):
        return torch.as_tensor(np.stack([d[j] for d in v]))

    n = len(net.relu_sizes)
    return [stack(d_lo, j) for j in range(n)], [stack(d_up, j) for j in range(n)], \
        [stack(signs, j) for j in range(n)], signs


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_every_engine_bound_is_below_the_exact_minimum(seed):
    rng = np.random.default_rng(seed)
    net = relu_network((2, 4, 3, 2), seed=seed, bias_scale=CASE_BIAS)
    lo, up = -np.ones(2), np.ones(2)
    eng = Engine(TorchNetwork(net), lo, up)
    B = 6
    t_lo, t_up, t_sign, signs = _domains(net, lo, up, B, rng)
    rel = [relax(t_lo[j], t_up[j]) for j in range(len(t_lo))]
    C = rng.normal(size=(3, 2))
    tnet = eng.t
    coef = (torch.as_tensor(C) @ tnet.W[-1]).expand(B, -1, -1)
    const = (torch.as_tensor(C) @ tnet.b[-1]).expand(B, -1)
    variants = {"crown": {}}
    alphas = [torch.as_tensor(rng.random((B, 3, n))) for n in net.relu_sizes]
    betas = [torch.as_tensor(rng.random((B, 3, n)) * 2) for n in net.relu_sizes]
    variants["alpha"] = {"alphas": alphas}
    variants["alpha+beta"] = {"alphas": alphas, "betas": betas, "signs": t_sign}
    opt_a, opt_b, _ = eng.optimise(rel, len(rel), coef, const, signs=t_sign, iters=20)
    variants["optimised"] = {"alphas": opt_a, "betas": opt_b, "signs": t_sign}
    for name, kw in variants.items():
        low, x_star, _ = eng.lower(rel, len(rel), coef, const, **kw)
        for d in range(B):
            for r in range(3):
                exact = _exact_min(net, C[r], lo, up, signs[d])
                assert float(low[d, r]) <= exact + 1e-9, (name, d, r, float(low[d, r]), exact)
        assert x_star.shape == (B, 3, 2)
        assert bool(((x_star >= eng.x_lo) & (x_star <= eng.x_up)).all())


def test_a_batch_of_many_equals_each_domain_alone():
    rng = np.random.default_rng(1)
    net = relu_network((5, 12, 10, 3), seed=1, bias_scale=CASE_BIAS)
    lo, up = -np.ones(5), np.ones(5)
    eng = Engine(TorchNetwork(net), lo, up)
    B = 7
    t_lo, t_up, t_sign, _ = _domains(net, lo, up, B, rng)
    rel = [relax(t_lo[j], t_up[j]) for j in range(len(t_lo))]
    coef = eng.t.W[-1].expand(B, -1, -1)
    const = eng.t.b[-1].expand(B, -1)
    alphas = [torch.as_tensor(rng.random((B, 3, n))) for n in net.relu_sizes]
    betas = [torch.as_tensor(rng.random((B, 3, n))) for n in net.relu_sizes]
    many, _, _ = eng.lower(rel, 2, coef, const, alphas=alphas, betas=betas, signs=t_sign)
    for d in range(B):
        one_rel = [r.pick(torch.tensor([d])) for r in rel]
        one, _, _ = eng.lower(one_rel, 2, coef[d:d + 1], const[d:d + 1], alphas=[a[d:d + 1] for a in alphas],
                              betas=[b[d:d + 1] for b in betas], signs=[s[d:d + 1] for s in t_sign])
        np.testing.assert_allclose(one.numpy(), many[d:d + 1].numpy(), rtol=1e-13, atol=1e-13)


def _sparse_network(seed: int):
    """A small network whose first two weight matrices are mostly zeros (like an unrolled convolution)."""
    from verify.network import ReluNetwork

    base = relu_network((12, 5, 4, 2), seed=seed, bias_scale=CASE_BIAS)
    rng = np.random.default_rng(seed)
    weights = [w * (rng.random(w.shape) < 0.1 * (k == 0)) if k < 2 else w for k, w in enumerate(base.weights)]
    for w in weights[:2]:  # keep every row and column connected
        w[np.arange(w.shape[0]), np.arange(w.shape[0]) % w.shape[1]] = 1.0
    return ReluNetwork(weights, base.biases)


@pytest.mark.parametrize("seed", range(3))
def test_sparse_layers_give_the_dense_bounds_and_stay_below_the_exact_minimum(seed):
    net = _sparse_network(seed)
    lo, up = -np.ones(12), np.ones(12)
    sparse_t = TorchNetwork(net)
    dense_t = TorchNetwork(net)
    dense_t.sparse = [False] * len(dense_t.sparse)
    assert sparse_t.sparse == [True, True, False]
    rng = np.random.default_rng(seed)
    B = 3
    t_lo, t_up, t_sign, signs = _domains(net, lo, up, B, rng)
    rel = [relax(t_lo[j], t_up[j]) for j in range(2)]
    C = rng.normal(size=(2, 2))
    coef = (torch.as_tensor(C) @ sparse_t.W[-1]).expand(B, -1, -1)
    const = (torch.as_tensor(C) @ sparse_t.b[-1]).expand(B, -1)
    alphas = [torch.as_tensor(rng.random((B, 2, n))) for n in net.relu_sizes]
    betas = [torch.as_tensor(rng.random((B, 2, n))) for n in net.relu_sizes]
    lows = []
    for tnet in (sparse_t, dense_t):
        eng = Engine(tnet, lo, up)
        low, _, _ = eng.lower(rel, 2, coef, const, alphas=alphas, betas=betas, signs=t_sign)
        est = eng.estimate(rel, 2, coef, const, alphas=alphas, betas=betas, signs=t_sign)
        opt_a, _, _ = eng.optimise(rel, 2, coef, const, iters=5)
        lows.append((low.numpy(), est.numpy(), [a.numpy() for a in opt_a]))
        np.testing.assert_allclose(tnet.forward(torch.ones(1, 12, dtype=torch.float64)).numpy(),
                                   net.forward(np.ones((1, 12))), rtol=1e-12)
    np.testing.assert_allclose(lows[0][0], lows[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lows[0][1], lows[1][1], rtol=1e-4, atol=1e-4)
    for a, b in zip(lows[0][2], lows[1][2], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)
    for d in range(B):
        for r in range(2):
            assert lows[0][0][d, r] <= _exact_min(net, C[r], lo, up, signs[d]) + 1e-9


def test_fixing_a_neuron_in_a_relaxation_equals_relaxing_its_clipped_bounds():
    # filtered smart branching scores its children from the parent's relaxation with one neuron fixed
    gen = torch.Generator().manual_seed(0)
    lo = torch.randn((4, 6), generator=gen, dtype=torch.float64) - 0.5
    up = lo + torch.rand((4, 6), generator=gen, dtype=torch.float64) * 2
    rows, cols = torch.nonzero((lo < 0) & (up > 0), as_tuple=True)  # the unstable neurons (the candidates)
    assert rows.numel() >= 3
    for active in (True, False):
        c_lo, c_up = lo.clone(), up.clone()
        if active:
            c_lo[rows, cols] = c_lo[rows, cols].clamp(min=0)
        else:
            c_up[rows, cols] = c_up[rows, cols].clamp(max=0)
        want = relax(c_lo, c_up)
        got = relax(lo, up).repeat(2)
        got.fix(rows + 4, cols, active)  # the second copy of the batch
        for f in ("s_low", "s_up", "t_up", "unstable"):
            assert torch.equal(getattr(got, f)[4:], getattr(want, f)), (active, f)
            assert torch.equal(getattr(got, f)[:4], getattr(relax(lo, up), f))
        # the magnitudes stay those of the parent: never below the child's (sound for rounding terms)
        assert bool((got.z_mag[4:] >= want.z_mag).all()) and bool((got.a_mag[4:] >= want.a_mag).all())


def test_box_bounds_are_the_engine_on_a_batch_of_one():
    # BoxBounds' output bounds are the engine's back-substitution of C on one domain
    net = relu_network((4, 8, 8, 3), seed=2, bias_scale=CASE_BIAS)
    lo, up = -np.ones(4), np.ones(4)
    box = BoxBounds(net, lo, up)
    C = np.array([[1.0, -1.0, 0.0]])
    eng = Engine(TorchNetwork(net), lo, up)
    rel = [relax(torch.as_tensor(l_).view(1, -1), torch.as_tensor(u_).view(1, -1)) for l_, u_ in box.layers[:-1]]
    a = torch.as_tensor(C) @ eng.t.W[-1]
    low = eng.bound_linear(rel, a, torch.as_tensor(C) @ eng.t.b[-1], width0=3,
                           err=torch.as_tensor(np.abs(C) @ (np.abs(net.weights[-1]) @ np.maximum(box.layers[-2][1], 0)
                                                            + np.abs(net.biases[-1]))))
    assert float(box.spec_bounds(C)[0][0]) >= float(low[0]) - 1e-12
    assert float(box.spec_bounds(C)[0][0]) == pytest.approx(float(low[0]), abs=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CPU equals CUDA: needs a GPU, and this machine has none")
def test_cuda_equals_cpu():
    net = relu_network((5, 12, 10, 3), seed=3, bias_scale=CASE_BIAS)
    lo, up = -np.ones(5), np.ones(5)
    out = []
    for dev in ("cpu", "cuda"):
        eng = Engine(TorchNetwork(net, dev), lo, up)
        t_lo, t_up, t_sign, _ = _domains(net, lo, up, 4, np.random.default_rng(3))
        rel = [relax(t_lo[j].to(dev), t_up[j].to(dev)) for j in range(2)]
        betas = [torch.full((4, 3, n), 0.5, dtype=torch.float64, device=dev) for n in net.relu_sizes]
        low, _, _ = eng.lower(rel, 2, eng.t.W[-1].expand(4, -1, -1), eng.t.b[-1].expand(4, -1), betas=betas,
                              signs=[s.to(dev) for s in t_sign])
        out.append(low.cpu().numpy())
    np.testing.assert_allclose(out[0], out[1], rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_exact_intermediate_bounds_are_sound_and_tighter_than_lp():
    net = relu_network((3, 6, 6, 5, 2), seed=4, bias_scale=CASE_BIAS)
    lo, up = -np.ones(3), np.ones(3)
    crown = crown_bounds(net, lo, up)
    lp, _ = lp_tighten(net, lo, up, crown)
    milp, stats = lp_tighten(net, lo, up, crown, exact=True)
    assert stats["complete"] == 1
    xs = lo + (up - lo) * np.random.default_rng(0).random((20_000, 3))
    pre = net.pre_activations(xs)
    for k in range(3):
        z = pre[k].reshape(len(xs), -1)
        assert np.all(z >= milp[k][0] - 1e-9) and np.all(z <= milp[k][1] + 1e-9)
        assert np.all(milp[k][0] >= lp[k][0] - 1e-6) and np.all(milp[k][1] <= lp[k][1] + 1e-6)
    # the unstable neurons' bounds are the exact extrema (the stable ones keep their CROWN bounds)
    from verify.network import ReluNetwork

    for k in (1, 2):
        sub = ReluNetwork(net.weights[:k + 1], net.biases[:k + 1])
        unstable = np.flatnonzero((crown[k][0] < 0) & (crown[k][1] > 0))
        assert unstable.size
        for j in unstable:
            e = np.eye(net.relu_sizes[k])[j]
            exact_lo = _exact_min(sub, e, lo, up, [np.zeros(n) for n in net.relu_sizes[:k]])
            exact_up = -_exact_min(sub, -e, lo, up, [np.zeros(n) for n in net.relu_sizes[:k]])
            assert milp[k][0][j] == pytest.approx(exact_lo, abs=1e-5)
            assert milp[k][1][j] == pytest.approx(exact_up, abs=1e-5)


def test_bad_input_is_refused_before_anything_runs():
    net = relu_network((4, 8, 3), seed=0, bias_scale=CASE_BIAS)
    spec = robustness(np.zeros(4), 0.5, 0, 3)
    root = BoxBounds(net, spec.lower, spec.upper).best[:-1]
    start = time.perf_counter() + 10
    with pytest.raises(ResourceLimitError, match="memory cap"):
        bab.bab_clause(net, spec, 0, root, start, memory=1000)
    with pytest.raises(InvalidParameterError, match=r"CUDA is not available|device"):
        if torch.cuda.is_available():
            raise InvalidParameterError("device: skipped, CUDA is present here")
        bab.bab_clause(net, spec, 0, root, start, device="cuda")
    with pytest.raises(InvalidParameterError, match="branching"):
        bab.bab_clause(net, spec, 0, root, start, branching="widest")
    with pytest.raises(InvalidParameterError, match="share of the time left"):
        VerifyOptions(timeout=10, alpha_share=0.7, bab_share=1.5)
    with pytest.raises(InvalidParameterError, match="share of the time left"):
        VerifyOptions(timeout=10, lp_share=-0.1)
    with pytest.raises(ResourceLimitError, match="bab_memory"):
        from verify import verify

        verify(net, spec, options=VerifyOptions(timeout=10, bab_memory=1000))
