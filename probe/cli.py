"""The ``neurospec`` command line.

Subcommands:
    neurospec data check [--root DIR]          what data was found (counts, checksums)
    neurospec train NAME [--seed S] [--force]  train (or load from the cache) a reference model
    neurospec demo [--root DIR]                a short end-to-end run on real data
    neurospec nap mine (--onnx NET.onnx | --model NAME) --data mnist [--delta 0.99] --out naps.json
    neurospec nap stats naps.json (--onnx NET.onnx | --model NAME) --data mnist [--split test]
    neurospec verify --onnx NET.onnx --vnnlib PROP.vnnlib --timeout S [--out result.txt] [--solver cbc|highs]
    neurospec verify-batch instances.csv --out results.csv [--root DIR]
    neurospec complexity measure (--onnx NET.onnx | --model NAME) [--beta 0.1] [--rule exact|paper] [--out DIR]
    neurospec complexity sweep (--onnx NET.onnx | --model NAME) --data mnist --betas 0.05 0.1 [--out sweep.json]
    neurospec moe detect (--model NAME --data mnist | --tokfsm relu|gelu) --experts E [--method M ...] --out DIR
    neurospec codebook train-tokfsm --out DIR [--n-codes 10000] [--steps 1000] [--device cpu|cuda]
    neurospec codebook steer DIR [--pairs 100] [--samples 20]

Errors raised by neurospec are printed as one line (``error: ...``) without a stack trace, and the
command exits with status 1 (2 for wrong usage).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from probe.errors import InvalidParameterError, NeurospecError


def _cmd_data_check(args: argparse.Namespace) -> int:
    from probe.data import check_data, format_data_check

    results = check_data(args.root)
    print(format_data_check(results))
    bad = [r for r in results if not r.found or r.checksum_ok is False]
    return 1 if bad else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from probe.models import train_reference

    model = train_reference(args.name, root=args.root, seed=args.seed, force=args.force, device=args.device)
    info = model.reference_info
    print(
        f"{info['name']} (seed {info['seed']}): test accuracy {info['test_accuracy']:.4f}, "
        f"trained in {info['train_seconds']:.1f} s on {info['device']}"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from probe.demo import run_demo

    print(run_demo(root=args.root, verbose=not args.quiet))
    return 0


def _load_subject(args: argparse.Namespace, source: dict | None = None):
    """The model named on the command line (an ONNX file or a cached or freshly trained reference model),
    else the one recorded in ``source`` (a NAP file's subject)."""
    if not args.onnx and not args.model and source:
        args.onnx, args.model, args.seed = source.get("onnx"), source.get("model"), source.get("seed", args.seed)
    if not args.onnx and not args.model:
        raise InvalidParameterError("name the model with --onnx NET.onnx or --model NAME")
    if args.onnx:
        from verify.onnx_io import load_onnx

        return load_onnx(args.onnx)
    from probe.models import train_reference

    return train_reference(args.model, root=args.root, seed=args.seed, verbose=not args.quiet)


def _data_loader(args: argparse.Namespace, split: str):
    from probe import data

    dataset = data.load(args.data, split, root=args.root)
    if args.limit is not None:
        dataset = dataset.subset(args.limit)
    return dataset, data.make_loader(dataset, batch_size=args.batch_size)


def _cmd_nap_mine(args: argparse.Namespace) -> int:
    from probe import nap

    model = _load_subject(args)
    dataset, loader = _data_loader(args, args.split)
    naps = nap.mine(model, loader, delta=args.delta, layers=args.layers, only_correct=not args.all_samples,
                    verbose=not args.quiet, class_names=list(dataset.classes))
    naps.source = ({"onnx": str(Path(args.onnx).resolve())} if args.onnx else {"model": args.model, "seed": args.seed})
    naps.source.update({"data": args.data, "split": args.split, "limit": args.limit})
    naps.save(args.out)
    sizes = naps.sizes()
    print(f"mined NAPs of {len(naps.layers)} ReLU layers ({naps.num_neurons()} neurons) from {len(dataset)} "
          f"{args.data} {args.split} images; delta={naps.delta}; wrote {args.out}")
    print("class  samples  active  inactive")
    for c in range(naps.num_classes):
        print(f"{c:5d}  {int(naps.n_samples[c]):7d}  {sizes['active'][c]:6d}  {sizes['inactive'][c]:8d}")
    if naps.empty_classes:
        print(f"classes without counted samples (empty NAP): {naps.empty_classes}")
    return 0


def _cmd_nap_stats(args: argparse.Namespace) -> int:
    from probe.nap import NAPSet

    naps = NAPSet.load(args.naps)
    model = _load_subject(args, naps.source)
    dataset, loader = _data_loader(args, args.split)
    deltas = args.deltas or [naps.delta]
    print(f"{len(dataset)} {args.data} {args.split} images")
    print("delta   class  size  coverage  precision")
    for st in naps.sweep(model, loader, deltas, verbose=not args.quiet):
        sizes = naps.with_delta(st.delta).sizes()["total"]
        for c in range(naps.num_classes):
            print(f"{st.delta:<6}  {c:5d}  {sizes[c]:4d}  {st.coverage[c]:8.4f}  {st.precision[c]:9.4f}")
    return 0


def _cmd_moe_detect(args: argparse.Namespace) -> int:
    import torch

    from probe import moe

    if args.tokfsm:
        from codebook.tokfsm import TokFSM, pretrained

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
        model = _load_subject(args)
        _, loader = _data_loader(args, "train")
        _, eval_loader = _data_loader(args, "test")
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


def _add_subject_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--onnx", help="an ONNX network (e.g. mnist-net_256x4.onnx); stats: default from the file")
    src.add_argument("--model", help="a reference model: mnist-mlp, mnist-cnn, cifar10-cnn")
    p.add_argument("--data", required=True, help="mnist, cifar10, digits, eran-mnist, eran-cifar10")
    p.add_argument("--root", default=None, help="data root")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference model")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``neurospec`` (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(prog="neurospec", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="report which data files were found and whether they are intact")
    check.add_argument("--root", default=None, help="data root (default: $NEUROSPEC_DATA or ../shared/data)")
    check.set_defaults(func=_cmd_data_check)

    train = sub.add_parser("train", help="train (or load from the cache) a reference model")
    train.add_argument("name", help="mnist-mlp, mnist-cnn, cifar10-cnn or cifar10-vgg")
    train.add_argument("--root", default=None, help="data root")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="cpu")
    train.add_argument("--force", action="store_true", help="retrain even if cached")
    train.set_defaults(func=_cmd_train)

    demo = sub.add_parser("demo", help="run a short end-to-end demo on real data")
    demo.add_argument("--root", default=None, help="data root")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)

    nap = sub.add_parser("nap", help="neural activation patterns")
    nap_sub = nap.add_subparsers(dest="nap_command", required=True)
    mine = nap_sub.add_parser("mine", help="mine the NAP of every class")
    _add_subject_args(mine)
    mine.add_argument("--split", default="train")
    mine.add_argument("--delta", type=float, default=0.99)
    mine.add_argument("--layers", nargs="+", default=None, help="ReLU layer names (default: all)")
    mine.add_argument("--all-samples", action="store_true", help="count misclassified samples too")
    mine.add_argument("--out", required=True, help="output JSON file")
    mine.set_defaults(func=_cmd_nap_mine)
    stats = nap_sub.add_parser("stats", help="coverage and precision of mined NAPs on a data set")
    stats.add_argument("naps", help="a JSON file written by `neurospec nap mine`")
    _add_subject_args(stats, required=False)
    stats.add_argument("--split", default="test")
    stats.add_argument("--deltas", nargs="+", type=float, default=None,
                       help="re-threshold at these deltas (default: the file's delta)")
    stats.set_defaults(func=_cmd_nap_stats)

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

    from verify.cli import add_verify_commands

    add_verify_commands(sub)

    from probe._complexity_cli import add_complexity_commands

    add_complexity_commands(sub)

    from codebook.cli import add_codebook_commands

    add_codebook_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neurospec`` console script.

    Example:
        >>> main(["data", "check"])  # doctest: +SKIP
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except NeurospecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
