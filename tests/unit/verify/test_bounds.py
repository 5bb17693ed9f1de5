"""Unit tests of verify.bounds: soundness (by dense sampling) and tightness of IBP and CROWN bounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from verify.bounds import crown_bounds, interval_bounds, output_bounds
from verify.errors import SpecError
from verify.network import ReluNetwork

SLACK = 1e-9
ARCHS = [(4, 8, 8, 3), (3, 6, 2), (5, 10, 10, 10, 4), (2, 16, 1)]


def _net(arch: tuple[int, ...], seed: int) -> ReluNetwork:
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((n_out, n_in)) / np.sqrt(n_in) for n_in, n_out in itertools.pairwise(arch)]
    biases = [0.3 * rng.standard_normal(n_out) for n_out in arch[1:]]
    return ReluNetwork(weights, biases)


def _box(n: int, rng: np.random.Generator, width: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    centre = rng.standard_normal(n)
    radius = width * rng.random(n)
    return centre - radius, centre + radius


def _samples(lo: np.ndarray, up: np.ndarray, rng: np.random.Generator, n: int = 20_000) -> np.ndarray:
    """Uniform points of the box, its corners (when few) and points on its faces."""
    dim = lo.size
    pts = [lo + (up - lo) * rng.random((n, dim))]
    if dim <= 10:
        corners = np.array(list(itertools.product([0.0, 1.0], repeat=dim)))
        pts.append(lo + (up - lo) * corners)
    faces = lo + (up - lo) * rng.random((2000, dim))
    mask = rng.random((2000, dim)) < 0.5
    pts.append(np.where(mask, np.where(rng.random((2000, dim)) < 0.5, lo, up), faces))
    return np.vstack(pts)


def _values(net: ReluNetwork, x: np.ndarray) -> list[np.ndarray]:
    return [*net.pre_activations(x), net.forward(x)]


def _assert_contains(bounds: list[tuple[np.ndarray, np.ndarray]], values: list[np.ndarray]) -> None:
    assert len(bounds) == len(values)
    for k, ((lo, up), v) in enumerate(zip(bounds, values, strict=True)):
        assert lo.shape == up.shape == v.shape[1:]
        assert (v >= lo - SLACK).all(), f"layer {k}: a value is below its lower bound"
        assert (v <= up + SLACK).all(), f"layer {k}: a value is above its upper bound"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("seed", range(4))
def test_bounds_are_sound_and_crown_is_tighter(arch: tuple[int, ...], seed: int) -> None:
    net = _net(arch, seed)
    rng = np.random.default_rng(100 + seed)
    lo, up = _box(arch[0], rng)
    x = _samples(lo, up, rng)
    values = _values(net, x)
    ibp = interval_bounds(net, lo, up)
    crown = crown_bounds(net, lo, up)
    _assert_contains(ibp, values)
    _assert_contains(crown, values)
    for (il, iu), (cl, cu) in zip(ibp, crown, strict=True):
        assert (cl >= il).all() and (cu <= iu).all()
    # and strictly tighter somewhere on deeper nets with unstable neurons
    if len(arch) > 3:
        gain = [float(np.sum((iu - il) - (cu - cl))) for (il, iu), (cl, cu) in zip(ibp, crown, strict=True)]
        assert sum(gain) > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_output_bounds_are_sound(arch: tuple[int, ...]) -> None:
    net = _net(arch, 7)
    rng = np.random.default_rng(8)
    lo, up = _box(arch[0], rng)
    y = net.forward(_samples(lo, up, rng))
    n_out = arch[-1]
    C = np.vstack([rng.standard_normal((4, n_out)), np.eye(n_out)])
    if n_out > 1:
        C = np.vstack([C, np.eye(n_out)[0] - np.eye(n_out)[1:]])  # margins of class 0 over the others
    clo, cup = output_bounds(net, lo, up, C)
    cy = y @ C.T
    assert clo.shape == cup.shape == (C.shape[0],)
    assert (cy >= clo - SLACK).all() and (cy <= cup + SLACK).all()
    # on the identity rows, output_bounds is at least as tight as the output layer of crown_bounds
    yl, yu = crown_bounds(net, lo, up)[-1]
    rows = slice(4, 4 + n_out)
    assert (clo[rows] >= yl - 1e-12).all() and (cup[rows] <= yu + 1e-12).all()
    one_lo, one_up = output_bounds(net, lo, up, C[0])
    np.testing.assert_allclose([one_lo[0], one_up[0]], [clo[0], cup[0]])


@pytest.mark.parametrize("seed", range(6))
def test_fixed_states_are_sound_for_points_that_follow_them(seed: int) -> None:
    arch = (4, 8, 8, 3)
    net = _net(arch, seed)
    rng = np.random.default_rng(200 + seed)
    lo, up = _box(4, rng, width=0.6)
    x = _samples(lo, up, rng)
    pres = net.pre_activations(x)
    # force the states a random point has, on a random subset of the neurons of each layer
    anchor = pres[0][0], pres[1][0]
    fixed = {}
    keep = np.ones(len(x), dtype=bool)
    for k, z in enumerate(anchor):
        chosen = rng.random(z.size) < 0.4
        active, inactive = chosen & (z > 0), chosen & (z <= 0)
        fixed[k] = (active, inactive)
        keep &= (pres[k][:, active] > 0).all(axis=1) & (pres[k][:, inactive] <= 0).all(axis=1)
    assert keep.sum() >= 10
    values = [v[keep] for v in _values(net, x)]
    for method in (interval_bounds, crown_bounds):
        bounds = method(net, lo, up, fixed)
        _assert_contains(bounds, values)
        for k, (active, inactive) in fixed.items():
            assert (bounds[k][0][active] >= 0).all() and (bounds[k][1][inactive] <= 0).all()
    C = np.eye(3)[0] - np.eye(3)[1:]
    clo, cup = output_bounds(net, lo, up, C, fixed)
    cy = values[-1] @ C.T
    assert (cy >= clo - SLACK).all() and (cy <= cup + SLACK).all()
    # forcing states never loosens a bound
    free = crown_bounds(net, lo, up)
    forced = crown_bounds(net, lo, up, fixed)
    for (fl, fu), (gl, gu) in zip(free, forced, strict=True):
        assert (gl >= fl - 1e-12).all() and (gu <= fu + 1e-12).all()


def test_hand_computed_example() -> None:
    # y = relu(x) - relu(x) on x in [-1, 2]: IBP gives [-2, 2]; CROWN's upper line 2/3 (x + 1) for the first
    # ReLU and lower line x (u > -l) for the second give -x/3 + 2/3 <= 1 and x/3 - 2/3 >= -1.
    net = ReluNetwork([np.array([[1.0], [1.0]]), np.array([[1.0, -1.0]])], [np.zeros(2), np.zeros(1)])
    lo, up = np.array([-1.0]), np.array([2.0])
    (il, iu), (yl, yu) = interval_bounds(net, lo, up)
    np.testing.assert_allclose([il, iu], [[-1, -1], [2, 2]], atol=1e-12)
    np.testing.assert_allclose([yl[0], yu[0]], [-2.0, 2.0], atol=1e-12)
    (cl, cu) = crown_bounds(net, lo, up)[-1]
    np.testing.assert_allclose([cl[0], cu[0]], [-1.0, 1.0], atol=1e-12)
    # the symmetric box: u = -l, so CROWN takes the lower line 0 and the bounds are [-1, 1]
    (cl, cu) = crown_bounds(net, np.array([-1.0]), np.array([1.0]))[-1]
    np.testing.assert_allclose([cl[0], cu[0]], [-1.0, 1.0], atol=1e-12)
    # forcing the first neuron inactive: y = -relu(x) on x <= 0, which is 0
    fixed = {0: (np.array([False, False]), np.array([True, True]))}
    (cl, cu) = crown_bounds(net, lo, up, fixed)[-1]
    np.testing.assert_allclose([cl[0], cu[0]], [0.0, 0.0], atol=1e-12)


def test_point_box_is_exact() -> None:
    net = _net((5, 10, 10, 10, 4), 3)
    x = np.random.default_rng(1).standard_normal(5)
    values = _values(net, x[None])
    for (lo, up), v in zip(crown_bounds(net, x, x), values, strict=True):
        np.testing.assert_allclose(lo, v[0], atol=1e-10)
        np.testing.assert_allclose(up, v[0], atol=1e-10)


def test_stable_network_is_exact_on_the_output_spec() -> None:
    # all ReLUs active on the box: the network is affine there, and CROWN finds the exact range
    rng = np.random.default_rng(5)
    w0, w1 = np.abs(rng.standard_normal((6, 3))), rng.standard_normal((2, 6))
    net = ReluNetwork([w0, w1], [np.full(6, 5.0), np.zeros(2)])
    lo, up = np.zeros(3), np.ones(3)
    A = w1 @ w0
    clo, cup = output_bounds(net, lo, up, np.eye(2))
    exact_lo = np.minimum(A, 0) @ up + np.maximum(A, 0) @ lo + w1 @ np.full(6, 5.0)
    exact_up = np.maximum(A, 0) @ up + np.minimum(A, 0) @ lo + w1 @ np.full(6, 5.0)
    np.testing.assert_allclose(clo, exact_lo, atol=1e-10)
    np.testing.assert_allclose(cup, exact_up, atol=1e-10)


def test_network_without_relus() -> None:
    net = ReluNetwork([np.array([[1.0, -2.0]])], [np.array([0.5])])
    ((lo, up),) = crown_bounds(net, np.zeros(2), np.ones(2))
    np.testing.assert_allclose([lo[0], up[0]], [-1.5, 1.5], atol=1e-12)
    clo, cup = output_bounds(net, np.zeros(2), np.ones(2), np.array([[2.0]]))
    np.testing.assert_allclose([clo[0], cup[0]], [-3.0, 3.0], atol=1e-12)


def test_bad_arguments() -> None:
    net = _net((4, 8, 8, 3), 0)
    lo, up = np.zeros(4), np.ones(4)
    with pytest.raises(SpecError, match="4 lower and upper"):
        crown_bounds(net, np.zeros(3), np.ones(3))
    with pytest.raises(SpecError, match="empty"):
        interval_bounds(net, up, lo)
    with pytest.raises(SpecError, match="NaN"):
        crown_bounds(net, np.full(4, np.nan), up)
    with pytest.raises(SpecError, match="ReLU layer index"):
        crown_bounds(net, lo, up, {2: (None, None)})
    with pytest.raises(SpecError, match="mask has 3 entries"):
        crown_bounds(net, lo, up, {0: (np.ones(3, bool), None)})
    with pytest.raises(SpecError, match="both active and inactive"):
        crown_bounds(net, lo, up, {0: (np.ones(8, bool), np.ones(8, bool))})
    with pytest.raises(SpecError, match=r"shape \(rows, 3\)"):
        output_bounds(net, lo, up, np.eye(4))


# ---------------------------------------------------------------- alpha-CROWN
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("seed", range(3))
def test_alpha_crown_is_sound_and_never_looser(arch: tuple[int, ...], seed: int) -> None:
    from verify.bounds import alpha_spec_lower, alpha_tighten, lp_tighten

    net = _net(arch, 300 + seed)
    rng = np.random.default_rng(400 + seed)
    lo, up = _box(arch[0], rng, width=1.5)
    values = _values(net, _samples(lo, up, rng))
    crown = crown_bounds(net, lo, up)
    tight, stats = alpha_tighten(net, lo, up, crown, iters=30)
    assert stats["complete"] == 1
    _assert_contains(tight, values)
    for (cl, cu), (tl, tu) in zip(crown, tight, strict=True):
        assert (tl >= cl).all() and (tu <= cu).all()
    # the optimal slopes give the LP (triangle relaxation) bound; alpha-CROWN approaches it from CROWN's side
    # (and can never beat it: with LP-exact earlier bounds, the LP is the best bound of the relaxation)
    lp, _ = lp_tighten(net, lo, up, crown)
    for (ll, lu), (tl, tu) in zip(lp[:-1], tight[:-1], strict=True):
        assert (tl <= ll + 1e-6 * (1 + np.abs(ll))).all() and (tu >= lu - 1e-6 * (1 + np.abs(lu))).all()
    C = np.vstack([np.eye(arch[-1]), rng.standard_normal((3, arch[-1]))])
    spec_lo = alpha_spec_lower(net, lo, up, tight[:-1], C, iters=30)
    assert (values[-1] @ C.T >= spec_lo - SLACK).all()
    assert (spec_lo >= output_bounds(net, lo, up, C)[0] - 1e-9).all()


@pytest.mark.parametrize("seed", range(4))
def test_alpha_crown_with_fixed_states_is_sound_for_points_that_follow_them(seed: int) -> None:
    from verify.bounds import alpha_spec_lower, alpha_tighten

    arch = (4, 8, 8, 8, 3)
    net = _net(arch, 500 + seed)
    rng = np.random.default_rng(600 + seed)
    lo, up = _box(4, rng, width=1.5)
    x = _samples(lo, up, rng)
    pres = net.pre_activations(x)
    fixed, keep = {}, np.ones(len(x), dtype=bool)
    for k in range(3):
        z = pres[k][0]
        chosen = rng.random(z.size) < 0.3
        fixed[k] = (chosen & (z > 0), chosen & (z <= 0))
        keep &= (pres[k][:, fixed[k][0]] > 0).all(axis=1) & (pres[k][:, fixed[k][1]] <= 0).all(axis=1)
    values = [v[keep] for v in _values(net, x)]
    tight, _ = alpha_tighten(net, lo, up, crown_bounds(net, lo, up, fixed), fixed=fixed, iters=20)
    _assert_contains(tight, values)
    C = np.eye(3)[0] - np.eye(3)[1:]
    assert (values[-1] @ C.T >= alpha_spec_lower(net, lo, up, tight[:-1], C, fixed=fixed) - SLACK).all()
