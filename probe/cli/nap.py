"""``neurospec nap mine|stats``: neural activation patterns (:mod:`probe.nap`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from probe.cli.common import add_subject_args, data_loader, load_subject
from probe.core.paths import check_output


def _cmd_nap_mine(args: argparse.Namespace) -> int:
    from probe import nap

    nap.check_delta(args.delta)
    check_output(args.out)
    model = load_subject(args)
    dataset, loader = data_loader(args, args.split)
    partial = Path(f"{args.out}.partial.safetensors")  # resumable counts; an interrupted run continues here
    naps = nap.mine(model, loader, delta=args.delta, layers=args.layers, only_correct=not args.all_samples,
                    verbose=not args.quiet, class_names=list(dataset.classes), checkpoint=partial)
    naps.source = ({"onnx": str(Path(args.onnx).resolve())} if args.onnx else {"model": args.model, "seed": args.seed})
    naps.source.update({"data": args.data, "split": args.split, "limit": args.limit})
    naps.save(args.out)
    partial.unlink(missing_ok=True)
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
    from probe.nap import NAPSet, check_delta

    for delta in args.deltas or []:
        check_delta(delta)
    naps = NAPSet.load(args.naps)
    model = load_subject(args, naps.source)
    dataset, loader = data_loader(args, args.split)
    deltas = args.deltas or [naps.delta]
    print(f"{len(dataset)} {args.data} {args.split} images")
    print("delta   class  size  coverage  precision")
    for st in naps.sweep(model, loader, deltas, verbose=not args.quiet):
        sizes = naps.with_delta(st.delta).sizes()["total"]
        for c in range(naps.num_classes):
            print(f"{st.delta:<6}  {c:5d}  {sizes[c]:4d}  {st.coverage[c]:8.4f}  {st.precision[c]:9.4f}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``neurospec nap`` on the ``neurospec`` sub-parser collection."""
    nap = sub.add_parser("nap", help="neural activation patterns")
    nap_sub = nap.add_subparsers(dest="nap_command", required=True)
    mine = nap_sub.add_parser("mine", help="mine the NAP of every class")
    add_subject_args(mine)
    mine.add_argument("--split", default="train")
    mine.add_argument("--delta", type=float, default=0.99)
    mine.add_argument("--layers", nargs="+", default=None, help="ReLU layer names (default: all)")
    mine.add_argument("--all-samples", action="store_true", help="count misclassified samples too")
    mine.add_argument("--out", required=True, help="output JSON file")
    mine.set_defaults(func=_cmd_nap_mine)
    stats = nap_sub.add_parser("stats", help="coverage and precision of mined NAPs on a data set")
    stats.add_argument("naps", help="a JSON file written by `neurospec nap mine`")
    add_subject_args(stats, required=False)
    stats.add_argument("--split", default="test")
    stats.add_argument("--deltas", nargs="+", type=float, default=None,
                       help="re-threshold at these deltas (default: the file's delta)")
    stats.set_defaults(func=_cmd_nap_stats)
