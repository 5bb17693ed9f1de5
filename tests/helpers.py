"""Builders shared by the tests: small torch MLPs and ReLU networks, the random verification cases of the
property-based tests with their exact and sampled oracles, tiny TokFSM transformers, ERAN's test images.

Test files import it as ``helpers`` (``pythonpath = ["tests"]`` in pyproject.toml). Each builder makes
exactly what the copies it replaced made; the parameters cover where those copies differed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from torch import nn

from verify.network import ReluNetwork
from verify.properties import Spec, robustness

# ---- small MLPs and ReLU networks -------------------------------------------------------------------------


def mlp(
    widths: Sequence[int],
    seed: int | None = None,
    *,
    act: Callable[[], nn.Module] | Sequence[Callable[[], nn.Module]] = nn.ReLU,
    flatten: bool = False,
) -> nn.Sequential:
    """``nn.Linear`` layers of ``widths`` with an activation between each two (none after the last).

    Args:
        widths: input width, hidden widths, output width.
        seed: seeds torch's global generator first; None draws from it as it stands.
        act: the activation's class (or factory), or one per hidden layer.
        flatten: put an ``nn.Flatten()`` in front.
    """
    if seed is not None:
        torch.manual_seed(seed)
    n_hidden = len(widths) - 2
    acts = list(act) if isinstance(act, Sequence) else [act] * n_hidden
    if len(acts) != n_hidden:
        raise ValueError(f"{len(acts)} activations for {n_hidden} hidden layers")
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < n_hidden:
            layers.append(acts[i]())
    return nn.Sequential(*layers)


def relu_network(widths: Sequence[int], seed: int, *, bias_scale: float = 1.0) -> ReluNetwork:
    """The ReLU :func:`mlp` of ``widths`` (torch seeded with ``seed``), biases times ``bias_scale``, as a
    :class:`ReluNetwork` over inputs of shape ``(widths[0],)``."""
    model = mlp(widths, seed)
    if bias_scale != 1.0:
        with torch.no_grad():
            for m in model:
                if isinstance(m, nn.Linear):
                    m.bias.mul_(bias_scale)
    return ReluNetwork.from_torch(model, (widths[0],))


# ---- random verification cases and their oracles ----------------------------------------------------------

EXACT_MAX = 8  # hidden neurons up to which exact_violation is affordable
CASE_BIAS = 2.0  # larger biases than torch's default: more stable and dead neurons, as in practice
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def cases(draw) -> tuple[ReluNetwork, Spec]:
    """A small random ReLU network and a robustness or random-polytope property over a box."""
    n_in = draw(st.integers(1, 3))
    hidden = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    n_out = draw(st.integers(2, 3))
    net = relu_network([n_in, *hidden, n_out], draw(st.integers(0, 10_000)), bias_scale=CASE_BIAS)
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


def exact_violation(net: ReluNetwork, spec: Spec) -> bool:
    """Whether some input of the box maps into some unsafe clause, exactly: every activation pattern of the
    hidden ReLUs, one LP per pattern and clause with scipy's own solver (independent of PuLP/CBC)."""
    n = net.n_inputs
    for pattern in itertools.product([0.0, 1.0], repeat=sum(net.relu_sizes)):
        # affine map of each layer's pre-activation as a function of x under this pattern
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


def sampled_violation(net: ReluNetwork, spec: Spec) -> np.ndarray | None:
    """A point of the box (20,000 uniform ones and the corners) strictly inside an unsafe clause, or None."""
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


# ---- tiny TokFSM transformers -----------------------------------------------------------------------------


def tiny_model(seed: int = 0, n_layers: int = 1, d_model: int = 16, n_codes: int | None = None):
    """A freshly initialised TokFSM transformer (2 heads of ``d_model // 2``, d_mlp 32); with ``n_codes``,
    codebooks of that many codes attached at every site. (Imported here: the verifier's tests need no
    TransformerLens, e.g. on a GPU machine that has only torch.)"""
    from codebook import CodebookConfig, attach, site_names
    from probe.zoo.tokfsm import make_model

    m = make_model(seed=seed, n_layers=n_layers, d_model=d_model, n_heads=2, d_head=d_model // 2, d_mlp=32)
    if n_codes is not None:
        attach(m, site_names(m), CodebookConfig(n_codes=n_codes))
    return m


# ---- real data --------------------------------------------------------------------------------------------


def eran_images(
    root: Path, dataset: str, dtype: type[np.floating] = np.float64, n_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """ERAN's test images of ``dataset`` as ``dtype``, pixels / 255, flattened as the files store them
    (CIFAR-10: HWC-interleaved, i.e. the NHWC flattening the marabou networks take), and their labels.
    With ``n_rows``, asserts the file has that many rows."""
    rows = np.loadtxt(root / "eran" / f"{dataset}_test.csv", delimiter=",", dtype=np.float64)
    if n_rows is not None:
        assert rows.shape[0] == n_rows
    return rows[:, 1:].astype(dtype) / 255.0, rows[:, 0].astype(np.int64)
