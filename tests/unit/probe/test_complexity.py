"""Feature complexity (iterative feature merging): grouping, the merge procedure against a brute-force oracle,
exactness on planted duplicates, save/load, and every bad input named in the issue."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import mlp
from torch import nn

from probe import complexity
from probe.complexity.build import check_output_shape
from probe.complexity.graph import analyse
from probe.complexity.merge import Merger, pairwise_sq
from probe.core.errors import DataError, InvalidParameterError, ModelError

# ---- tiny models ----------------------------------------------------------------------------------------


WIDTHS = (6, 8, 7, 3)


def _randomise_bn(net: nn.Module) -> None:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.5, 2.0)


def _cnn(bn: bool) -> nn.Sequential:
    norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=not bn), norm(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3, padding=1), norm(6), nn.ReLU(), nn.Flatten(),
        nn.Linear(6 * 16, 5), nn.ReLU(), nn.Linear(5, 3),
    ).eval()
    _randomise_bn(net)
    return net


def _plant_duplicates(net: nn.Sequential, bn: bool) -> None:
    """Channels 4..7 of the first conv copy channels 0..3; each copy carries half the outgoing weight, so the
    network computes the same function and the copies are at distance 0."""
    with torch.no_grad():
        net[0].weight[4:] = net[0].weight[:4]
        if bn:
            for k in ("weight", "bias", "running_mean", "running_var"):
                getattr(net[1], k)[4:] = getattr(net[1], k)[:4]
        else:
            net[0].bias[4:] = net[0].bias[:4]
        net[4].weight[:, :4] /= 2
        net[4].weight[:, 4:] = net[4].weight[:, :4]


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(self.bn(self.conv(h)) + h)
        return self.head(h.flatten(1))


class _NHWC(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 2 * 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).permute(0, 2, 3, 1)
        return self.fc(h.reshape(h.shape[0], -1))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---- grouping -------------------------------------------------------------------------------------------


def test_grouping_flatten_ties_each_channel_to_its_block_of_columns():
    a = analyse(_cnn(bn=True), torch.zeros(1, 3, 8, 8))
    assert [(g.name, g.size, g.frozen) for g in a.groups.values()] == [
        ("0", 8, False), ("4", 6, False), ("8", 5, False), ("10", 3, True)]
    assert a.batchnorm == {"0": "1", "4": "5"}
    cols = a.groups["4"].consumers[0].cols
    assert cols.shape == (6, 16)
    assert torch.equal(cols, torch.arange(96).view(6, 16))  # NCHW flatten: channel c -> columns 16c..16c+15
    assert a.in_group == {"0": None, "4": "0", "8": "4", "10": "8"}


def test_grouping_after_nhwc_permute_follows_the_layout():
    a = analyse(_NHWC().eval(), torch.zeros(1, 1, 2, 2))
    cols = a.groups["conv"].consumers[0].cols
    assert torch.equal(cols, torch.tensor([[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]))


def test_residual_add_ties_two_producers_into_one_group():
    a = analyse(_Residual().eval(), torch.zeros(1, 2, 4, 4))
    assert list(a.groups) == ["stem", "head"]
    g = a.groups["stem"]
    assert g.producers == ["stem", "conv"]
    assert sorted(c.module for c in g.consumers) == ["conv", "head"]


# ---- the procedure --------------------------------------------------------------------------------------


def _oracle_mlp(weights, biases, beta, rule):
    """Brute force: the paper's rounds on a plain MLP, every distance recomputed from scratch by loops."""
    W = [w.detach().double().clone() for w in weights]
    B = [b.detach().double().clone() for b in biases]
    n_groups = len(W) - 1
    counts = [[1.0] * W[k].shape[0] for k in range(n_groups)]
    members = [[[i] for i in range(W[k].shape[0])] for k in range(n_groups)]

    def vec(k, i):
        return torch.cat([W[k][i], B[k][i : i + 1], W[k + 1][:, i]])

    while True:
        merged = False
        for k in range(n_groups):
            n = W[k].shape[0]
            if n < 2:
                continue
            best, d_max = None, 0.0
            for i in range(n):
                for j in range(i + 1, n):
                    d = float(((vec(k, i) - vec(k, j)) ** 2).sum())
                    d_max = max(d_max, d)
                    if best is None or d < best[0] - 1e-12 * max(1.0, abs(best[0])):
                        best = (d, i, j)
            d_min, i, j = best
            if d_min > beta * d_max:
                continue
            ci, cj = counts[k][i], counts[k][j]
            keep = [t for t in range(n) if t != j]
            if rule == "exact":
                W[k][i] = (ci * W[k][i] + cj * W[k][j]) / (ci + cj)
                B[k][i] = (ci * B[k][i] + cj * B[k][j]) / (ci + cj)
                W[k + 1][:, i] = W[k + 1][:, i] + W[k + 1][:, j]
            else:
                W[k][i] = W[k][i] + W[k][j]
                B[k][i] = B[k][i] + B[k][j]
                W[k + 1][:, i] = (ci * W[k + 1][:, i] + cj * W[k + 1][:, j]) / (ci + cj)
            W[k], B[k], W[k + 1] = W[k][keep], B[k][keep], W[k + 1][:, keep]
            counts[k][i] = ci + cj
            del counts[k][j]
            members[k][i] = sorted(members[k][i] + members[k][j])
            del members[k][j]
            merged = True
        if not merged:
            return W, B, members


@pytest.mark.parametrize("rule", ["exact", "paper"])
@pytest.mark.parametrize("beta", [0.3, 0.5, 0.7])
def test_merging_matches_brute_force_oracle(rule, beta):
    net = mlp((5, 9, 8, 3)).eval()
    report = complexity.measure(net, beta=beta, rule=rule)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    W, B, members = _oracle_mlp([m.weight for m in linears], [m.bias for m in linears], beta, rule)
    assert [g.clusters for g in report.groups] == members
    merged = [m for m in report.merged_model if isinstance(m, nn.Linear)]
    for m, w, b in zip(merged, W, B, strict=True):
        assert torch.allclose(m.weight.double(), w, atol=1e-6)
        assert torch.allclose(m.bias.double(), b, atol=1e-6)


@pytest.mark.parametrize("rule", ["exact", "paper"])
def test_incremental_distances_equal_recomputed(rule):
    torch.manual_seed(1)
    for model, shape in [(_cnn(bn=True), (3, 8, 8)), (_Residual().eval(), (2, 4, 4))]:
        _randomise_bn(model)
        a = analyse(model, torch.zeros(1, *shape))
        m = Merger(model, a, rule)
        for _ in range(3):
            for g in m.mergeable:
                if m.size(g) > 1:
                    i, j, _, _ = m.closest(g)
                    m.merge(g, i, j)
            for g in m.mergeable:
                fresh = pairwise_sq(m.vectors(g))
                assert torch.allclose(m.D[g], fresh, atol=1e-9 * float(fresh.max()) + 1e-12), g


def test_closest_pair_breaks_ties_by_lowest_index():
    net = mlp((2, 4, 1)).eval()
    with torch.no_grad():  # four identical units: every pair is at distance 0
        net[0].weight[:] = 1.0
        net[0].bias[:] = 0.5
        net[2].weight[:] = 1.0
    a = analyse(net, torch.zeros(1, 2))
    m = Merger(net, a, "exact")
    assert m.closest("0")[:3] == (0, 1, 0.0)


def test_pairwise_sq_matches_loops():
    x = torch.randn(5, 7, dtype=torch.float64)
    d = pairwise_sq(x)
    for i in range(5):
        for j in range(5):
            assert math.isclose(float(d[i, j]), float(((x[i] - x[j]) ** 2).sum()), rel_tol=1e-9, abs_tol=1e-12)


# ---- exactness on duplicates -----------------------------------------------------------------------------


@pytest.mark.parametrize("bn", [False, True])
def test_exact_rule_preserves_function_on_planted_duplicates(bn):
    net = _cnn(bn)
    _plant_duplicates(net, bn)
    x = torch.randn(16, 3, 8, 8)
    report = complexity.measure(net, beta=1e-9, rule="exact", input_shape=(3, 8, 8))
    assert report.groups[0].merged_groups == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert report.complexity == {"0": 4, "4": 6, "8": 5}
    with torch.no_grad():
        assert _rel(report.merged_model(x), net(x)) <= 1e-5
    assert report.params_after < report.params_before and report.flops_after < report.flops_before


def test_paper_rule_is_exact_without_batchnorm_and_missscales_with_it():
    x = torch.randn(16, 3, 8, 8)
    errors = {}
    for bn in (False, True):
        net = _cnn(bn)
        _plant_duplicates(net, bn)
        rep = complexity.measure(net, beta=1e-9, rule="paper", input_shape=(3, 8, 8))
        with torch.no_grad():
            errors[bn] = _rel(rep.merged_model(x), net(x))
    assert errors[False] <= 1e-5
    assert errors[True] > 1e-2


def test_paper_rule_batchnorm_closed_form_sqrt2():
    """Summed BatchNorm statistics of k=2 duplicates give 2*(sqrt(2)*gamma*(z-mu)/sigma + beta), not 2*BN(z)."""
    net = nn.Sequential(nn.Linear(3, 2, bias=False), nn.BatchNorm1d(2, eps=0.0), nn.ReLU(), nn.Linear(2, 1)).eval()
    with torch.no_grad():
        net[0].weight[1] = net[0].weight[0]
        net[1].weight[:] = 1.5
        net[1].bias[:] = 0.25
        net[1].running_mean[:] = 0.1
        net[1].running_var[:] = 0.8
        net[3].weight[:] = 1.0
    rep = complexity.measure(net, beta=1e-9, rule="paper")
    merged = rep.merged_model
    x = torch.randn(7, 3)
    with torch.no_grad():
        z = x @ net[0].weight[0]
        expected = 2 * (math.sqrt(2) * 1.5 * (z - 0.1) / math.sqrt(0.8) + 0.25)
        got = merged[1](merged[0](x))[:, 0]
    assert torch.allclose(got, expected, atol=1e-5)


def test_dead_features_collapse_to_one():
    net = mlp((3, 5, 2)).eval()
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.zero_()
        net[2].weight.zero_()
    rep = complexity.measure(net, beta=0.01)
    assert rep.complexity == {"0": 1}


def test_max_ratio_caps_merges_per_group():
    net = mlp((5, 12, 10, 3)).eval()
    rep = complexity.measure(net, beta=0.99, max_ratio=0.25)
    assert rep.complexity == {"0": 12 - 3, "2": 10 - 2}
    full = complexity.measure(net, beta=0.99)
    assert full.complexity == {"0": 2, "2": 2}  # two features: d_min == d_max > beta * d_max


def test_measure_is_deterministic_and_does_not_modify_the_model():
    net = _cnn(bn=True).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    r1 = complexity.measure(net, beta=0.6, input_shape=(3, 8, 8))
    r2 = complexity.measure(net, beta=0.6, input_shape=(3, 8, 8))
    assert [g.clusters for g in r1.groups] == [g.clusters for g in r2.groups]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.training and not r1.merged_model.training


@pytest.mark.parametrize("rule", ["exact", "paper"])
@pytest.mark.parametrize("beta", [0.2, 0.6, 0.95])
def test_merged_output_shape_always_equals_original(rule, beta):
    for model, shape in [(_cnn(True), (3, 8, 8)), (_Residual().eval(), (2, 4, 4)), (_NHWC().eval(), (1, 2, 2)),
                         (mlp(WIDTHS).eval(), (6,))]:
        rep = complexity.measure(model, beta=beta, rule=rule, input_shape=shape)
        x = torch.randn(3, *shape)
        with torch.no_grad():
            assert rep.merged_model(x).shape == model(x).shape


@pytest.mark.parametrize("name,shape,widths", [
    ("mnist-mlp", (1, 28, 28), [256, 256]),
    ("mnist-cnn", (1, 28, 28), [16, 32, 100]),
    ("cifar10-cnn", (3, 32, 32), [32, 64, 64, 128, 128, 128]),
    ("cifar10-vgg", (3, 32, 32), [32, 64, 64, 128, 128, 128]),
])
def test_reference_architectures_are_grouped_and_merged(name, shape, widths):
    from probe.zoo.reference import build_reference

    model = build_reference(name).eval()  # untrained weights: structure only (Normalize first, BN, pooling)
    rep = complexity.measure(model, beta=0.95, max_ratio=0.25, input_shape=shape)
    assert [g.width for g in rep.groups] == widths
    assert [g.complexity for g in rep.groups] == [w - w // 4 for w in widths]
    x = torch.rand(2, *shape)
    with torch.no_grad():
        assert rep.merged_model(x).shape == model(x).shape == (2, 10)


def test_output_shape_guard_raises_on_a_mismatch():
    with pytest.raises(ModelError, match="output shape"):
        check_output_shape((3,), nn.Linear(4, 2), torch.zeros(1, 4))


# ---- results ---------------------------------------------------------------------------------------------


def test_report_save_load_round_trip(tmp_path):
    net = _cnn(bn=True)
    rep = complexity.measure(net, beta=0.5, input_shape=(3, 8, 8))
    rep.save(tmp_path / "r")
    back = complexity.ComplexityReport.load(tmp_path / "r", model=net)
    assert back == rep
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(back.merged_model(x), rep.merged_model(x))
    assert complexity.ComplexityReport.load(tmp_path / "r").merged_model is None
    with pytest.raises(DataError, match=r"cannot read a feature-complexity report from .*missing"):
        complexity.ComplexityReport.load(tmp_path / "missing")


def test_sweep_and_plots(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    net = mlp((4, 10, 3)).eval()
    x = torch.randn(40, 4)
    y = net(x).argmax(1).detach()
    loader = [(x[:20], y[:20]), (x[20:], y[20:])]
    res = complexity.sweep(net, [0.05, 0.5, 0.9], loader)
    assert res.baseline_accuracy == 1.0 and res.n_samples == 40
    assert [p.beta for p in res.points] == [0.05, 0.5, 0.9]
    assert res.points[-1].params <= res.points[0].params
    res.save(tmp_path / "s.json")
    assert complexity.SweepResult.load(tmp_path / "s.json") == res
    assert res.best_within(0.0) is not None
    assert res.plot() is not None
    assert complexity.measure(net, beta=0.5).plot() is not None


# ---- bad input (one test each) ---------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0, 1, 1.0, -0.1, 1.5, float("nan"), True, "0.1", None])
def test_beta_outside_open_unit_interval(beta):
    with pytest.raises(InvalidParameterError, match=r"beta must be a number in the open interval \(0, 1\)"):
        complexity.measure(mlp(WIDTHS).eval(), beta=beta)


@pytest.mark.parametrize("ratio", [0, -0.5, 1.01, float("inf"), "1"])
def test_max_ratio_outside_half_open_interval(ratio):
    with pytest.raises(InvalidParameterError, match=r"max_ratio must be a number in \(0, 1\]"):
        complexity.measure(mlp(WIDTHS).eval(), beta=0.1, max_ratio=ratio)


def test_unknown_rule():
    with pytest.raises(InvalidParameterError, match="rule must be one of"):
        complexity.measure(mlp(WIDTHS).eval(), beta=0.1, rule="average")


def test_unsupported_layer_is_named():
    net = nn.Sequential(nn.Linear(4, 5), nn.Sigmoid(), nn.Linear(5, 2)).eval()
    with pytest.raises(ModelError, match=r"module '1' \(Sigmoid\)"):
        complexity.measure(net, beta=0.1)


def test_unsupported_layernorm_is_named():
    net = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 2)).eval()
    with pytest.raises(ModelError, match=r"LayerNorm"):
        complexity.measure(net, beta=0.1)


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1))


def test_unsupported_topology_concat_is_named():
    with pytest.raises(ModelError, match=r"function 'cat'"):
        complexity.measure(_Concat().eval(), beta=0.1, input_shape=(3,))


def test_batchnorm_after_relu_is_rejected():
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.BatchNorm1d(5), nn.Linear(5, 2)).eval()
    with pytest.raises(ModelError, match=r"module '2' \(BatchNorm1d\) must directly follow"):
        complexity.measure(net, beta=0.1)


class _AddInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)) + x)


def test_residual_add_with_non_features_is_rejected():
    with pytest.raises(ModelError, match="adds features to something"):
        complexity.measure(_AddInput().eval(), beta=0.1, input_shape=(3,))


def test_untraceable_model_is_rejected():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else x

    with pytest.raises(ModelError, match=r"torch\.fx"):
        complexity.measure(Branchy(), beta=0.1)


def test_not_a_module_and_missing_input_shape():
    with pytest.raises(InvalidParameterError, match=r"model must be a torch\.nn\.Module"):
        complexity.measure("mnist-mlp", beta=0.1)
    with pytest.raises(InvalidParameterError, match="input_shape is needed"):
        complexity.measure(_cnn(False), beta=0.1)


def test_sweep_bad_betas_and_empty_loader():
    with pytest.raises(InvalidParameterError, match="betas must be a non-empty"):
        complexity.sweep(mlp(WIDTHS).eval(), [], [(torch.zeros(1, 6), torch.zeros(1, dtype=torch.long))])
    with pytest.raises(InvalidParameterError, match="each beta"):
        complexity.sweep(mlp(WIDTHS).eval(), [0.1, 1.0], [(torch.zeros(1, 6), torch.zeros(1, dtype=torch.long))])
    with pytest.raises(DataError, match="no samples"):
        complexity.sweep(mlp(WIDTHS).eval(), [0.1], [])
