"""verify on the real VNN-COMP 2021 mnistfc networks and properties, checked against the tool consensus, and
NAP verification on mined NAPs. Instances are chosen to be quick (the full benchmark is
benchmarks/vnncomp_mnistfc.py)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import verify
from probe import data, nap
from probe.graph.onnx import run_reference
from probe.zoo.vnncomp import VNNCOMP_NETWORKS, load_vnncomp
from verify.cli import run_instance
from verify.network import ReluNetwork

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bench(data_root):
    return data_root / "vnncomp2021" / "mnistfc"


@pytest.fixture(scope="module")
def consensus(data_root):
    with (data_root / "vnncomp2021/results/consensus.csv").open(newline="") as fh:
        return {(r["onnx"], r["vnnlib"]): r["consensus"] for r in csv.DictReader(fh) if r["category"] == "mnistfc"}


@pytest.mark.parametrize("solver", ["cbc", "highs"])
@pytest.mark.parametrize("prop", ["prop_7_0.03", "prop_2_0.03", "prop_4_0.05", "prop_5_0.05"])
def test_mnistfc_256x2_matches_consensus(bench, consensus, prop, solver):
    res = run_instance(bench / "mnist-net_256x2.onnx", bench / f"{prop}.vnnlib", 120, solver=solver)
    expected = consensus[("mnist-net_256x2.onnx", f"{prop}.vnnlib")]
    assert res.vnncomp == ("unsat" if expected.startswith("holds") else "sat"), res
    if res.status == "falsified":
        cex = res.counterexample
        # the counterexample violates the property on the reference runtime too
        y = run_reference(bench / "mnist-net_256x2.onnx", cex.x.reshape(1, 784, 1).astype(np.float32))[0]
        assert np.allclose(y, cex.y_onnx, atol=1e-6)


def test_milp_decides_a_harder_instance(bench, consensus):
    res = run_instance(bench / "mnist-net_256x2.onnx", bench / "prop_13_0.03.vnnlib", 120, solver="highs")
    assert res.vnncomp == "unsat" and res.method == "milp", res


def test_cli_result_file_and_batch_resume(bench, tmp_path, capsys):
    from probe.cli import main

    out = tmp_path / "result.txt"
    assert main(["verify", "--onnx", str(bench / "mnist-net_256x2.onnx"), "--vnnlib",
                 str(bench / "prop_7_0.03.vnnlib"), "--timeout", "60", "--out", str(out)]) == 0
    text = out.read_text().splitlines()
    assert text[0] == "sat" and text[1].startswith("((X_0 ") and any(line.strip().startswith("(Y_9 ") for line in text)
    instances = tmp_path / "instances.csv"
    instances.write_text("mnist-net_256x2.onnx,prop_7_0.03.vnnlib,60\nmnist-net_256x2.onnx,prop_2_0.03.vnnlib,60\n")
    results = tmp_path / "results.csv"
    args = ["verify-batch", str(instances), "--root", str(bench), "--out", str(results), "--quiet"]
    assert main([*args]) == 0
    first = results.read_text()
    assert "sat" in first and "unsat" in first
    capsys.readouterr()
    assert main([*args]) == 0  # resumes: nothing left to do, rows kept
    assert results.read_text() == first


def test_nap_robustness_and_ambiguity_on_256x4(data_root):
    net = ReluNetwork.from_onnx(data_root / VNNCOMP_NETWORKS["mnist-256x4"])
    train = data.load_mnist("train", root=data_root).subset(20_000)
    naps = nap.mine(load_vnncomp("mnist-256x4", root=data_root), data.make_loader(train, batch_size=1000),
                    delta=0.99, verbose=False)
    assert naps.layers == net.relu_names
    res = verify.nap_robustness(net, naps, classes=[1], solver="highs", timeout=60)
    assert len(res[1]) == 9
    assert all(r.status in ("verified", "falsified", "timeout") for r in res[1])
    for r in res[1]:  # a NAP counterexample must really follow the NAP and be misclassified
        if r.status == "falsified":
            assert r.counterexample.y_source.argmax() != 1
    amb = verify.nap_ambiguity(net, naps, pairs=[(0, 1), (3, 5)], solver="highs", timeout=60)
    assert set(amb) == {(0, 1), (3, 5)}
    for pair, r in amb.items():
        if naps.disjoint_pairs()[pair]:
            assert r.method == "nap-conflict" and r.status == "verified"


def test_alpha_crown_bounds_on_256x6_are_sound_and_tighter(bench):
    from verify.bounds import BoxBounds
    from verify.vnnlib import read_vnnlib

    net = ReluNetwork.from_onnx(bench / "mnist-net_256x6.onnx")
    spec = read_vnnlib(bench / "prop_4_0.03.vnnlib", net.n_inputs, net.n_outputs)
    shared = BoxBounds(net, spec.lower, spec.upper)
    tight, stats = shared.optimised(iters=10)
    assert stats["complete"] == 1
    rng = np.random.default_rng(0)
    x = rng.uniform(spec.lower, spec.upper, size=(3000, net.n_inputs))
    x[:1000] = np.where(rng.random((1000, net.n_inputs)) < 0.5, spec.lower, spec.upper)  # box corners
    values = [*net.pre_activations(x), net.forward(x)]
    unstable = []
    for (cl, cu), (tl, tu), v in zip(shared.layers, tight, values, strict=True):
        assert (v >= tl - 1e-9).all() and (v <= tu + 1e-9).all()
        assert (tl >= cl).all() and (tu <= cu).all()
        unstable.append((int(np.sum((cl < 0) & (cu > 0))), int(np.sum((tl < 0) & (tu > 0)))))
    assert sum(a for _, a in unstable) < sum(c for c, _ in unstable), unstable
    C = np.vstack([a for a, _ in spec.unsafe])
    assert (values[-1] @ C.T >= shared.spec_lower(C, iters=10) - 1e-9).all()


def test_the_pattern_search_falsifies_a_nap_query_the_milp_leaves_open_on_256x2(data_root):
    """mnist-net_256x2, NAP of class 1 (delta 0.99, 20,000 training images): the MILP does not settle its
    robustness in 30 s (a timeout, measured); from the test images that follow the NAP, the activation-
    pattern search finds an input of [0, 1]^784 that follows the NAP strictly and is not classified 1."""
    net = ReluNetwork.from_onnx(data_root / VNNCOMP_NETWORKS["mnist-256x2"])
    train = data.load_mnist("train", root=data_root).subset(20_000)
    naps = nap.mine(load_vnncomp("mnist-256x2", root=data_root), data.make_loader(train, batch_size=1000),
                    delta=0.99, verbose=False)
    test = data.load_mnist("test", root=data_root)
    images, _ = test.tensors(range(len(test)))
    res = verify.nap_robustness(net, naps, classes=[1], solver="highs", timeout=30, per_competitor=False,
                                starts=images.reshape(len(test), -1).double().numpy())[1]
    # PGD that keeps the NAP's states runs first (it finds none here: 255 of the 256 second-layer neurons are
    # fixed), then the activation-pattern LPs
    assert (res.status, res.method) == ("falsified", "patterns"), res
    assert "state_attack" in res.timings
    x = np.asarray(res.counterexample.x)
    assert x.min() >= 0 and x.max() <= 1 and net.forward(x.reshape(1, -1))[0].argmax() != 1
    pre = net.pre_activations(x.reshape(1, -1))
    for k, (act, ina) in verify.api.nap_states(net, naps, [1]).items():
        assert np.all(pre[k][0][act] > 0) and np.all(pre[k][0][ina] <= 0)


def test_the_attack_finds_the_marabou_cifar10_counterexample_the_max_loss_missed(data_root):
    # one tool of 2021 found it in under 5 s; PGD on the max over the clause's rows alone stalled at a margin
    # of 0.04 with 2,560 starts of 200 steps, the sum of the violated rows finds it in about a second
    bench = data_root / "vnncomp2021" / "marabou-cifar10"
    res = run_instance(bench / "cifar10_medium.onnx",
                       bench / "networkcifar10_medium_index2317_eps0.012_target6_orig5.vnnlib", 60, solver="highs")
    assert res.vnncomp == "sat" and res.method == "attack", res
    y = run_reference(bench / "cifar10_medium.onnx", res.counterexample.x.reshape(1, 32, 32, 3).astype(np.float32))[0]
    assert np.allclose(y.reshape(-1), np.asarray(res.counterexample.y_onnx).reshape(-1), atol=1e-5)


def test_pgd_keeping_the_nap_falsifies_a_cifar10_small_nap_query(data_root):
    """cifar10_small (convolutional), NAP of class 0 (delta 0.95, 5,000 training images): from the test images
    that follow the NAP, PGD that keeps its states finds an input of [0, 1]^3072 that follows the NAP strictly
    and whose output scores class 1 at least as high as class 0 (the activation-pattern LPs found none of these
    at 10 s per query)."""
    net = ReluNetwork.from_onnx(data_root / VNNCOMP_NETWORKS["cifar10-small"])
    model = load_vnncomp("cifar10-small", root=data_root)
    train = data.load_cifar10("train", root=data_root).subset(5_000)
    naps = nap.mine(model, data.make_loader(train, batch_size=500), delta=0.95, verbose=False)
    images, _ = data.load_cifar10("test", root=data_root).tensors(range(2_000))
    starts = model.adapt_input(images).reshape(len(images), -1).double().numpy()
    states = verify.api.nap_states(net, naps, [0])
    spec = verify.properties.nap_robustness_spec(np.zeros(3072), np.ones(3072), states, 0, 10, targets=[1])
    res = verify.verify(net, spec, solver="highs", timeout=30, starts=starts)
    assert (res.status, res.method) == ("falsified", "attack"), res
    x = np.asarray(res.counterexample.x)
    y = net.forward(x.reshape(1, -1))[0]
    assert x.min() >= 0 and x.max() <= 1 and y[1] >= y[0]
    pre = net.pre_activations(x.reshape(1, -1))
    for k, (act, ina) in states.items():
        assert np.all(pre[k][0][act] > 0) and np.all(pre[k][0][ina] <= 0)
