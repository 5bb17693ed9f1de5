"""``neurospec demo``: a short end-to-end run on real data that later capabilities extend.

Example:
    >>> from probe.demo import run_demo
    >>> print(run_demo())  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time

import torch

__all__ = ["run_demo"]


def run_demo(root: str | os.PathLike[str] | None = None, verbose: bool = True) -> str:
    """Run the demo and return its report as text.

    Steps: check the data; train (or load from the cache) the reference MNIST MLP; evaluate it on the
    10,000 MNIST test images; load the VNN-COMP network ``mnist-net_256x4.onnx`` and evaluate it on the
    same images; show a few predictions; mine the network's NAPs from 20,000 training images and report
    their size, coverage and precision on the test set for three deltas; verify two VNN-COMP properties of
    ``mnist-net_256x2.onnx`` (one violated, one that holds).

    Args:
        root: data root (default ``$NEUROSPEC_DATA`` or ``../shared/data``).
        verbose: progress bars.

    Returns:
        A short human-readable report.
    """
    from probe import data, nap
    from probe.zoo.reference import evaluate, train_reference
    from probe.zoo.vnncomp import load_vnncomp

    lines = ["neurospec demo", "=============="]
    t0 = time.perf_counter()
    checks = data.check_data(root)
    found = sum(c.found for c in checks)
    lines.append(f"data: {found}/{len(checks)} expected files found, "
                 f"{sum(c.checksum_ok is True for c in checks)} checksums verified")

    test = data.load_mnist("test", root=root)
    x, y = test.tensors()
    t1 = time.perf_counter()
    mlp = train_reference("mnist-mlp", root=root, seed=0, verbose=verbose)
    info = mlp.reference_info
    acc = evaluate(mlp, x, y)
    lines.append(
        f"reference mnist-mlp: test accuracy {acc:.4f} (trained in {info['train_seconds']:.1f} s, "
        f"this call {time.perf_counter() - t1:.1f} s incl. cache)"
    )

    net = load_vnncomp("mnist-256x4", root=root)
    acc_onnx = evaluate(net, x, y)
    lines.append(f"VNN-COMP mnist-net_256x4.onnx: test accuracy {acc_onnx:.4f}, "
                 f"{len(net.relu_names())} ReLU layers (hookable nn.ReLU modules)")

    with torch.no_grad():
        pred_mlp = mlp(x[:10]).argmax(1).tolist()
        pred_onnx = net(x[:10]).argmax(1).tolist()
    lines.append(f"first 10 test labels:      {y[:10].tolist()}")
    lines.append(f"mnist-mlp predictions:     {pred_mlp}")
    lines.append(f"mnist-net_256x4 predicts:  {pred_onnx}")

    t2 = time.perf_counter()
    train = data.load_mnist("train", root=root).subset(20_000)
    naps = nap.mine(net, data.make_loader(train, batch_size=1000), delta=1.0, verbose=verbose)
    stats = naps.sweep(net, data.make_loader(test, batch_size=1000), [1.0, 0.99, 0.95], verbose=verbose)
    lines.append(f"NAPs of mnist-net_256x4 mined from {int(naps.n_samples.sum())} correctly classified training "
                 f"images ({naps.num_neurons()} neurons) in {time.perf_counter() - t2:.1f} s incl. test statistics:")
    for st in stats:
        size = sum(naps.with_delta(st.delta).sizes()["total"]) / naps.num_classes
        lines.append(f"  delta={st.delta:<5} mean NAP size {size:6.1f}  mean coverage "
                     f"{st.mean_coverage():.3f}  mean precision {st.mean_precision():.3f}")

    import verify
    from probe.core.paths import data_root
    from verify.network import ReluNetwork
    from verify.vnnlib import read_vnnlib

    bench = data_root(root) / "vnncomp2021" / "mnistfc"
    net2 = ReluNetwork.from_onnx(bench / "mnist-net_256x2.onnx")
    lines.append("verification of mnist-net_256x2.onnx (VNN-COMP 2021 properties, CBC):")
    for prop in ("prop_7_0.03", "prop_2_0.03"):
        spec = read_vnnlib(bench / f"{prop}.vnnlib", net2.n_inputs, net2.n_outputs)
        res = verify.verify(net2, spec, solver="cbc", timeout=60)
        lines.append(f"  {prop}: {res.vnncomp} ({res.status} by {res.method}) in {res.timings['total']:.2f} s")
    lines.append(f"total {time.perf_counter() - t0:.1f} s")
    return "\n".join(lines)
