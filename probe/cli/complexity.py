"""``neurospec complexity measure|sweep``: feature complexity from the command line (:mod:`probe.complexity`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from probe.cli.common import data_loader, load_subject
from probe.core.paths import check_output


def _subject_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--onnx", help="an ONNX network (e.g. mnist-net_256x4.onnx)")
    src.add_argument("--model", help="a reference model: mnist-mlp, mnist-cnn, cifar10-cnn, cifar10-vgg")
    p.add_argument("--root", default=None, help="data root")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference model")
    p.add_argument("--rule", default="exact", choices=["exact", "paper"])
    p.add_argument("--max-ratio", type=float, default=1.0, help="largest share of a layer merged away, (0, 1]")
    p.add_argument("--input-shape", type=int, nargs="+", default=None, help="per-sample input shape, e.g. 3 32 32")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _save(result, out: str | None) -> int:
    if out:
        result.save(out)
        print(f"wrote {out}")
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    from probe import complexity

    if args.out:
        check_output(args.out, folder=True)
    model = load_subject(args)
    rep = complexity.measure(model, beta=args.beta, rule=args.rule, max_ratio=args.max_ratio,
                             input_shape=args.input_shape, verbose=not args.quiet)
    print(f"feature complexity (beta={rep.beta:g}, rule={rep.rule}, max_ratio={rep.max_ratio:g}), "
          f"{rep.rounds} rounds, {rep.seconds:.2f} s")
    print("layer                 width  complexity")
    for g in rep.groups:
        print(f"{g.name:20s}  {g.width:6d}  {g.complexity:10d}")
    print(f"parameters {rep.params_before} -> {rep.params_after} ({100 * rep.params_removed:.1f}% removed); "
          f"FLOPs {rep.flops_before} -> {rep.flops_after} ({100 * rep.flops_removed:.1f}% removed)")
    return _save(rep, args.out)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from probe import complexity

    if args.out:
        check_output(args.out)
    model = load_subject(args)
    _, loader = data_loader(args, args.split)
    partial = Path(f"{args.out}.partial.json") if args.out else None  # an interrupted sweep resumes here
    res = complexity.sweep(model, args.betas, loader, rule=args.rule, max_ratio=args.max_ratio,
                           input_shape=args.input_shape, verbose=not args.quiet, checkpoint=partial)
    print(f"original accuracy {res.baseline_accuracy:.4f} on {res.n_samples} {args.data} {args.split} images; "
          f"{res.params_before} parameters")
    print("beta      accuracy  params kept  FLOPs kept  seconds  complexity")
    for p in res.points:
        print(f"{p.beta:<8g}  {p.accuracy:8.4f}  {p.params / res.params_before:11.3f}  "
              f"{p.flops / res.flops_before:10.3f}  {p.seconds:7.2f}  {list(p.complexity.values())}")
    code = _save(res, args.out)
    if partial is not None:
        partial.unlink(missing_ok=True)
    return code


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``complexity measure`` and ``complexity sweep`` on the ``neurospec`` sub-parser collection."""
    cx = sub.add_parser("complexity", help="feature complexity by iterative feature merging")
    cx_sub = cx.add_subparsers(dest="complexity_command", required=True)
    m = cx_sub.add_parser("measure", help="merge features at one beta; print the complexity per layer")
    _subject_args(m)
    m.add_argument("--beta", type=float, default=0.1, help="merge while d_min <= beta * d_max, in (0, 1)")
    m.add_argument("--out", default=None, help="folder for report.json + merged_model.safetensors")
    m.set_defaults(func=_cmd_measure)
    s = cx_sub.add_parser("sweep", help="accuracy, parameters and FLOPs of the merged model for several betas")
    _subject_args(s)
    s.add_argument("--betas", type=float, nargs="+", required=True)
    s.add_argument("--data", required=True, help="mnist, cifar10, ...")
    s.add_argument("--split", default="test")
    s.add_argument("--limit", type=int, default=None, help="only the first N images")
    s.add_argument("--batch-size", type=int, default=1000)
    s.add_argument("--out", default=None, help="sweep JSON file")
    s.set_defaults(func=_cmd_sweep)
