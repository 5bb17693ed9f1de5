"""NAP mining: exact semantics against a brute-force oracle, the NAPSet tools, and bad input."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest
import torch
from helpers import mlp
from torch import nn
from torch.nn import functional as F

from probe import nap
from probe.core.errors import DataError, InvalidParameterError, ModelError

WIDTHS = (4, 12, 10, 3)


def _data(n: int = 300, d: int = 4, classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def _loader(x, y, bs=64):
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(x), bs)]


def _oracle(model: nn.Sequential, x, y, delta, only_correct=True):
    """Brute force: every pre-activation stored, counts and thresholds computed by plain Python ints."""
    with torch.no_grad():
        pre, h = [], x
        for m in model:
            if isinstance(m, nn.ReLU):
                pre.append(h.clone())
            h = m(h)
        pred = h.argmax(1)
    classes = h.shape[1]
    frac = Fraction(str(delta))
    result = []
    for c in range(classes):
        sel = (y == c) & ((pred == y) if only_correct else torch.ones_like(y, dtype=torch.bool))
        n_c = int(sel.sum())
        per_layer = []
        for p in pre:
            a = (p[sel] > 0).sum(0).tolist()
            act = [n_c > 0 and Fraction(aj) >= frac * n_c for aj in a]
            ina = [n_c > 0 and Fraction(aj) <= (1 - frac) * n_c for aj in a]
            per_layer.append((a, act, ina))
        result.append((n_c, per_layer))
    return result


@pytest.mark.parametrize("delta", [1.0, 0.99, 0.9, 0.75, 0.51])
@pytest.mark.parametrize("only_correct", [True, False])
def test_mine_matches_bruteforce(delta, only_correct):
    model = mlp((4, 12, 9, 7, 3), seed=0)
    x, y = _data()
    naps = nap.mine(model, _loader(x, y), delta=delta, only_correct=only_correct, verbose=False)
    oracle = _oracle(model, x, y, delta, only_correct)
    assert naps.layers == ["1", "3", "5"]
    for c, (n_c, per_layer) in enumerate(oracle):
        assert int(naps.n_samples[c]) == n_c
        for layer, (a, act, ina) in zip(naps.layers, per_layer, strict=True):
            assert naps.counts[layer][c].tolist() == a
            assert naps.active[layer][c].tolist() == act
            assert naps.inactive[layer][c].tolist() == ina
            assert not (naps.active[layer][c] & naps.inactive[layer][c]).any()


def test_thresholds_are_exact_and_inclusive():
    counts = {"l": torch.tensor([[100, 99, 98, 2, 1, 0]])}
    naps = nap.NAPSet(0.99, ["l"], {"l": (6,)}, counts, torch.tensor([100]))
    assert naps.active["l"][0].tolist() == [True, True, False, False, False, False]
    assert naps.inactive["l"][0].tolist() == [False, False, False, False, True, True]
    # 0.95 * 20 = 19 exactly; floats would give 19.000000000000004 for some products
    naps = nap.NAPSet(0.95, ["l"], {"l": (6,)}, {"l": torch.tensor([[20, 19, 18, 2, 1, 0]])}, torch.tensor([20]))
    assert naps.active["l"][0].tolist() == [True, True, False, False, False, False]
    assert naps.inactive["l"][0].tolist() == [False, False, False, False, True, True]


def test_exact_zero_preactivation_is_inactive():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
        model[2].bias.copy_(torch.tensor([1.0, 0.0]))
    x = torch.randn(10, 2)
    naps = nap.mine(model, [(x, torch.zeros(10, dtype=torch.long))], delta=1.0, verbose=False)
    assert naps.counts["1"][0].tolist() == [0, 10, 0]
    assert naps.inactive["1"][0].tolist() == [True, False, True]


def test_functional_and_inplace_relus():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.c(torch.relu(F.relu(self.a(x)) @ torch.eye(8) + self.b.bias))

    model = Functional()
    x, y = _data()
    naps = nap.mine(model, _loader(x, y), delta=0.9, only_correct=False, verbose=False)
    assert naps.layers == ["fx_relu_0", "fx_relu_1"]
    with torch.no_grad():
        h1 = model.a(x)
        h2 = F.relu(h1) @ torch.eye(8) + model.b.bias
    assert naps.counts["fx_relu_0"].sum(0).tolist() == (h1 > 0).sum(0).tolist()
    assert naps.counts["fx_relu_1"].sum(0).tolist() == (h2 > 0).sum(0).tolist()

    inplace = mlp(WIDTHS, seed=0)
    inplace[1] = nn.ReLU(inplace=True)
    ref = nap.mine(mlp(WIDTHS, seed=0), _loader(x, y), verbose=False)
    got = nap.mine(inplace, _loader(x, y), verbose=False)
    assert got == ref


def test_conv_counts_per_channel_and_position():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 5, 2))
    x = torch.randn(40, 1, 5, 5)
    y = torch.randint(0, 2, (40,))
    naps = nap.mine(model, [(x, y)], only_correct=False, verbose=False)
    assert naps.shapes["1"] == (3, 5, 5)
    assert naps.counts["1"].shape == (2, 75)
    with torch.no_grad():
        pre = model[0](x)
    assert naps.counts["1"][1].tolist() == (pre[y == 1] > 0).reshape(-1, 75).sum(0).tolist()
    assert naps.mask(0, "1").shape == (3, 5, 5)


def test_layer_selection():
    x, y = _data()
    model = mlp((4, 12, 9, 3), seed=0)
    naps = nap.mine(model, _loader(x, y), layers=["3"], verbose=False)
    assert naps.layers == ["3"]
    with pytest.raises(ModelError, match=r"\['1', '3'\]"):
        nap.mine(model, _loader(x, y), layers=["2"], verbose=False)


def test_follows_coverage_precision_against_manual():
    model = mlp((4, 16, 16, 3), seed=0)
    x, y = _data(600)
    naps = nap.mine(model, _loader(x[:400], y[:400]), delta=0.9, verbose=False)
    xt, yt = x[400:], y[400:]
    follows = naps.follows(model, xt)
    with torch.no_grad():
        s1 = model[0](xt) > 0
        s2 = model[2](model[1](model[0](xt))) > 0
    for c in range(3):
        manual = torch.ones(len(xt), dtype=torch.bool)
        for s, layer in ((s1, "1"), (s2, "3")):
            manual &= (s | ~naps.active[layer][c]).all(1) & (~s | ~naps.inactive[layer][c]).all(1)
        assert follows[:, c].tolist() == manual.tolist()
    stats = naps.evaluate(model, _loader(xt, yt), verbose=False)
    for c in range(3):
        in_c = yt == c
        cov = (follows[:, c] & in_c).sum().item() / in_c.sum().item()
        assert stats.coverage[c] == pytest.approx(cov)
        n_f = follows[:, c].sum().item()
        prec = (follows[:, c] & in_c).sum().item() / n_f if n_f else float("nan")
        assert (math.isnan(prec) and math.isnan(stats.precision[c])) or stats.precision[c] == pytest.approx(prec)


def test_with_delta_equals_fresh_mining_and_sweep():
    model = mlp(WIDTHS, seed=0)
    x, y = _data()
    base = nap.mine(model, _loader(x, y), delta=1.0, verbose=False)
    for d in (0.99, 0.8, 0.6):
        assert base.with_delta(d) == nap.mine(model, _loader(x, y), delta=d, verbose=False)
    stats = base.sweep(model, _loader(x, y), [1.0, 0.8], verbose=False)
    assert [s.delta for s in stats] == [1.0, 0.8]
    single = base.with_delta(0.8).evaluate(model, _loader(x, y), verbose=False)
    assert json.dumps(stats[1].to_dict()) == json.dumps(single.to_dict())  # NaN-safe equality


def test_save_load_roundtrip(tmp_path):
    model = mlp(WIDTHS, seed=0)
    x, y = _data()
    naps = nap.mine(model, _loader(x, y), delta=0.95, verbose=False, class_names=["a", "b", "c"])
    naps.source = {"model": "tiny"}
    path = naps.save(tmp_path / "naps.json")
    back = nap.NAPSet.load(path)
    assert back == naps and back.source == {"model": "tiny"}
    obj = json.loads(path.read_text())
    assert obj["layers"][0]["active"][0] == torch.nonzero(naps.active["1"][0]).flatten().tolist()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        nap.NAPSet.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "x"}')
    with pytest.raises(DataError, match="not a neurospec NAP file"):
        nap.NAPSet.load(tmp_path / "other.json")
    with pytest.raises(DataError, match="does not exist"):
        nap.NAPSet.load(tmp_path / "missing.json")


def test_disjoint_pairs():
    counts = {"l": torch.tensor([[10, 0, 5], [0, 10, 5], [10, 5, 5]])}
    naps = nap.NAPSet(1.0, ["l"], {"l": (3,)}, counts, torch.tensor([10, 10, 10]))
    d = naps.disjoint_pairs()
    assert d[0, 1] and d[1, 0] and d[1, 2]
    assert not d[0, 2] and not d[0, 0]


def test_plots():
    import matplotlib

    matplotlib.use("Agg")
    model = mlp(WIDTHS, seed=0)
    x, y = _data()
    naps = nap.mine(model, _loader(x, y), verbose=False)
    assert naps.plot("heatmap") is not None
    stats = naps.sweep(model, _loader(x, y), [1.0, 0.9, 0.7], verbose=False)
    assert naps.plot("delta", stats=stats) is not None
    with pytest.raises(InvalidParameterError, match="heatmap"):
        naps.plot("pie")


# ---------------------------------------------------------------- bad input
def test_model_without_relu():
    with pytest.raises(ModelError, match="no ReLU"):
        nap.mine(nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3)), _loader(*_data()), verbose=False)


def test_loader_without_labels():
    x, _ = _data()
    with pytest.raises(DataError, match=r"\(inputs, labels\)"):
        nap.mine(mlp(WIDTHS, seed=0), [x[:10]], verbose=False)
    with pytest.raises(DataError, match="integer"):
        nap.mine(mlp(WIDTHS, seed=0), [(x[:10], torch.zeros(10))], verbose=False)


def test_labels_out_of_range():
    x, _ = _data()
    with pytest.raises(DataError, match=r"0\.\.2"):
        nap.mine(mlp(WIDTHS, seed=0), [(x[:10], torch.full((10,), 7))], verbose=False)


def test_empty_loader():
    with pytest.raises(DataError, match="no samples"):
        nap.mine(mlp(WIDTHS, seed=0), [], verbose=False)
    with pytest.raises(DataError, match="no samples"):
        nap.mine(mlp(WIDTHS, seed=0), [(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))], verbose=False)


def test_class_without_correct_samples(caplog):
    model = mlp(WIDTHS, seed=0)
    x, _ = _data()
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[pred == 2] = 0  # nothing predicted as 2 is labelled 2 → class 2 has no correct sample
    y[y == 2] = 1
    naps = nap.mine(model, _loader(x, y), verbose=False)
    assert 2 in naps.empty_classes
    assert int(naps.n_samples[2]) == 0
    assert not naps.active["1"][2].any() and not naps.inactive["1"][2].any()
    assert not naps.follows(model, x)[:, 2].any()
    assert "class 2" in caplog.text


@pytest.mark.parametrize("delta", [0.5, 0.2, 1.01, -1, float("nan")])
def test_delta_out_of_range(delta):
    with pytest.raises(InvalidParameterError, match=r"\(0.5, 1\]"):
        nap.mine(mlp(WIDTHS, seed=0), _loader(*_data()), delta=delta, verbose=False)


def test_nan_inputs_and_weights():
    x, y = _data()
    x[5, 1] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        nap.mine(mlp(WIDTHS, seed=0), _loader(x, y), verbose=False)
    model = mlp(WIDTHS, seed=0)
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")
    with pytest.raises(ModelError, match="NaN or inf"):
        nap.mine(model, _loader(*_data()), verbose=False)


def test_overflow_names_layer():
    model = mlp(WIDTHS, seed=0)
    with torch.no_grad():
        model[0].weight.fill_(1e38)
    x, y = _data()
    with pytest.raises(ModelError, match="ReLU '1'"):
        nap.mine(model, _loader(x * 1e3, y), verbose=False)


def test_training_mode_restored_and_eval_used():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 3))
    x, y = _data()
    model.eval()
    ref = nap.mine(model, _loader(x, y), verbose=False)
    model.train()
    got = nap.mine(model, _loader(x, y), verbose=False)
    assert model.training
    assert got == ref


def test_wrong_device():
    x, y = _data()
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match="CUDA is not available"):
            nap.mine(mlp(WIDTHS, seed=0), _loader(x, y), device="cuda", verbose=False)
    with pytest.raises(InvalidParameterError, match="device"):
        nap.mine(mlp(WIDTHS, seed=0), _loader(x, y), device="not-a-device", verbose=False)
    with pytest.raises(ModelError, match="meta"):
        nap.mine(mlp(WIDTHS, seed=0), _loader(x, y), device="meta", verbose=False)


def test_shared_relu_module_is_rejected():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(4, 6), relu, nn.Linear(6, 6), relu, nn.Linear(6, 3))
    with pytest.raises(ModelError, match="more than once"):
        nap.mine(model, _loader(*_data()), verbose=False)


def test_relus_restored_after_mining():
    model = mlp(WIDTHS, seed=0)
    nap.mine(model, _loader(*_data()), verbose=False)
    assert "forward" not in vars(model[1])
    with pytest.raises(DataError):
        nap.mine(model, [], verbose=False)
    assert "forward" not in vars(model[1])
