"""``neurospec moe detect``: emergent mixture-of-experts (:mod:`probe.moe`)."""

from __future__ import annotations

import argparse

from probe.cli.common import data_loader, load_subject
from probe.core.errors import InvalidParameterError
from probe.core.paths import check_output


def _cmd_moe_detect(args: argparse.Namespace) -> int:
    import torch

    from probe import moe

    check_output(args.out, folder=True)
    if args.tokfsm:
        from probe.data.tokfsm import TokFSM
        from probe.zoo.tokfsm import pretrained

        model = pretrained(args.tokfsm, verbose=not args.quiet)
        fsm = TokFSM()
        n_ctx = int(model.cfg.n_ctx)
        fit = fsm.sample(args.limit or 128, seed=100)[:, :n_ctx]
        held = fsm.sample(max(32, (args.limit or 128) // 2), seed=200)[:, :n_ctx]
        loader = list(torch.split(fit, args.batch_size))
        eval_loader = list(torch.split(held, args.batch_size))
        subject = f"TokFSM transformer ({args.tokfsm})"
    else:
        if not args.model or not args.data:
            raise InvalidParameterError("name the subject: --tokfsm relu|gelu, or --model NAME --data DATA")
        model = load_subject(args)
        _, loader = data_loader(args, "train")
        _, eval_loader = data_loader(args, "test")
        subject = f"{args.model} on {args.data}"
    report = moe.detect(model, loader, layers=args.layers, n_experts=args.experts, method=args.method,
                        top_k=args.top_k, eval_loader=eval_loader, n_random=args.n_random, seed=args.seed,
                        max_tokens=args.max_tokens, verbose=not args.quiet)
    report.save(args.out)
    print(f"{subject}: {len(report.layers)} FFN layers, {report.n_experts} experts, top-{report.top_k}; "
          f"wrote {args.out}")
    print("layer            method       coverage  random (mean±std)  gain(pts)  modularity  sparsity")
    for row in report.table():
        print(f"{row['layer']:<16} {row['method']:<12} {row['coverage']:8.3f}  {row['random_mean']:.3f} ± "
              f"{row['random_std']:.3f}      {row['gain_points']:+7.1f}  {row['modularity']:10.3f}  "
              f"{row['sparsity']:8.3f}")
    if report.task:
        dense = report.task["dense"]
        print(f"dense: {dense}")
        for meth, per_router in report.task["curves"].items():
            for router, vals in per_router.items():
                cells = ", ".join(f"{f:.3g}: {v.get('accuracy', next(iter(v.values()))):.4f}"
                                  for f, v in zip(report.task["fractions"], vals, strict=True))
                print(f"task accuracy  {meth}/{router}  {cells}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``neurospec moe`` on the ``neurospec`` sub-parser collection."""
    moe_p = sub.add_parser("moe", help="emergent mixture-of-experts in FFN layers")
    moe_sub = moe_p.add_subparsers(dest="moe_command", required=True)
    det = moe_sub.add_parser("detect", help="partition FFN neurons into experts and measure modularity")
    det.add_argument("--model", help="a reference model: mnist-mlp (Linear-ReLU-Linear blocks)")
    det.add_argument("--tokfsm", choices=["relu", "gelu"], help="the TokFSM transformer trained in this project")
    det.add_argument("--onnx", default=None, help=argparse.SUPPRESS)
    det.add_argument("--data", default=None, help="data set of --model (mnist, cifar10, digits)")
    det.add_argument("--root", default=None, help="data root")
    det.add_argument("--experts", type=int, default=16, help="experts per layer (must divide d_ff)")
    det.add_argument("--method", nargs="+", default=["activations"],
                     help="random, weights, activations, graph (the first is the primary one)")
    det.add_argument("--top-k", type=int, default=None, help="experts kept per token (default experts // 4)")
    det.add_argument("--layers", nargs="+", default=None, help="FFN layer names (default all)")
    det.add_argument("--n-random", type=int, default=5, help="random partitions in the baseline")
    det.add_argument("--max-tokens", type=int, default=8192, help="token rows captured per layer")
    det.add_argument("--seed", type=int, default=0)
    det.add_argument("--batch-size", type=int, default=500)
    det.add_argument("--limit", type=int, default=None, help="use only the first N images / sequences")
    det.add_argument("--out", required=True, help="output folder (moe_report.json + partitions.safetensors)")
    det.add_argument("--quiet", action="store_true", help="no progress bars")
    det.set_defaults(func=_cmd_moe_detect)
