"""probe.moe on real subjects: the reference MNIST MLP on real MNIST, a briefly trained TokFSM transformer,
and the `neurospec moe detect` command."""

from __future__ import annotations

import pytest
import torch

from probe import data, moe
from probe.cli import main
from probe.zoo.reference import train_reference

pytestmark = pytest.mark.integration


def test_mnist_mlp_experts_beat_random_and_all_experts_is_dense(data_root):
    model = train_reference("mnist-mlp", root=data_root, verbose=False)
    fit = data.make_loader(data.load_mnist("train", root=data_root).subset(2048), batch_size=512)
    test = data.make_loader(data.load_mnist("test", root=data_root).subset(2000), batch_size=1000)
    rep = moe.detect(model, fit, n_experts=16, method=["activations", "weights"], eval_loader=test,
                     fractions=(0.25, 1.0), routers=("avg_k",), n_random=3, verbose=False)
    assert rep.layers == ["3", "5"]
    for layer in rep.layers:
        # measured on held-out rows: +20 points on this model; a loose margin keeps the test stable
        assert rep.gain(layer, "activations") > 5.0
        assert rep.metrics[layer]["modularity"]["activations"] > rep.metrics[layer]["modularity"]["random"]
    assert rep.task["dense"]["accuracy"] > 0.95
    assert rep.task["curves"]["activations"]["avg_k"][-1] == pytest.approx(rep.task["dense"])
    assert rep.task["curves"]["activations"]["avg_k"][0]["accuracy"] < rep.task["dense"]["accuracy"]


def test_tokfsm_transformer_trained_briefly():
    from probe.data.tokfsm import TokFSM
    from probe.zoo.tokfsm import make_model, train_model

    fsm = TokFSM()
    model = make_model("gelu", n_layers=1, d_model=32, d_mlp=64, n_heads=2)
    train_model(model, fsm, steps=40, batch_size=16, verbose=False)
    toks = fsm.sample(16, seed=5)[:, :128]
    rep = moe.detect(model, list(torch.split(toks, 8)), n_experts=8, method=["activations", "graph"],
                     routers=("similarity",), fractions=(0.25,), max_tokens=2048, verbose=False)
    assert rep.act_fn == {"blocks.0.mlp": "gelu"}
    assert 0 < rep.task["dense"]["accuracy"] <= 1
    assert rep.metrics["blocks.0.mlp"]["coverage"]["activations"][-1] == pytest.approx(1.0)


def test_cli_moe_detect(tmp_path, data_root, capsys):
    out = tmp_path / "moe"
    code = main(["moe", "detect", "--model", "mnist-mlp", "--data", "mnist", "--root", str(data_root),
                 "--limit", "1000", "--experts", "8", "--method", "weights", "random", "--n-random", "2",
                 "--out", str(out), "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "weights" in text and "task accuracy" in text
    rep = moe.MoEReport.load(out)
    assert rep.methods == ["weights", "random"] and rep.n_experts == 8
    # bad input through the CLI: one line, exit status 1
    assert main(["moe", "detect", "--model", "mnist-mlp", "--data", "mnist", "--root", str(data_root),
                 "--limit", "100", "--experts", "7", "--out", str(tmp_path / "x"), "--quiet"]) == 1
    assert "does not divide d_ff=256" in capsys.readouterr().err
