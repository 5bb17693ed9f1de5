"""``neurospec codebook train-tokfsm`` and ``neurospec codebook steer``.

Example:
    neurospec codebook train-tokfsm --out runs/tokfsm --n-codes 1000 --steps 500 --device cpu
    neurospec codebook steer runs/tokfsm --pairs 100 --samples 20
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["add_commands", "load_tokfsm_run", "save_tokfsm_run"]

logger = logging.getLogger(__name__)

KINDS = ("attn_z", "attn_out", "mlp_out", "resid_post")


def save_tokfsm_run(directory: str | Path, model: Any, cbs: Any, info: dict[str, Any]) -> Path:
    """Save a fine-tuned TokFSM model with its codebooks: ``model.safetensors`` + ``config.json`` (the TokFSM
    model format), ``codebooks.safetensors`` + ``codebooks.json``, and ``run.json`` (``info``)."""
    from codebook.io import save_codebooks
    from probe.core.artifacts import write_json
    from probe.zoo.tokfsm import save_model

    directory = Path(directory)
    save_model(model, directory, {"codebook_run": True})
    save_codebooks(cbs, directory)
    write_json(directory / "run.json", info)
    return directory


def load_tokfsm_run(directory: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """Load what :func:`save_tokfsm_run` wrote: ``(model, codebooks)``."""
    from codebook.io import load_codebooks
    from probe.zoo.tokfsm import load_model

    model = load_model(directory, device=device)
    return model, load_codebooks(model, directory)


def _cmd_train_tokfsm(args: argparse.Namespace) -> int:
    import dataclasses

    from codebook.attach import site_names
    from codebook.layer import CodebookConfig
    from codebook.train import TrainConfig, codebook_metrics, fit_tokfsm
    from probe.core.device import check_device
    from probe.core.errors import InvalidParameterError
    from probe.core.paths import check_output
    from probe.core.validate import check_int
    from probe.data.tokfsm import TokFSM
    from probe.zoo.tokfsm import TokFSMTrainConfig as BaseConfig
    from probe.zoo.tokfsm import evaluate, pretrained

    # Everything is validated before any work: settings, device, sites, output folder.
    cfg = CodebookConfig(n_codes=args.n_codes, k=args.k, similarity=args.similarity, commitment=args.commitment,
                         dead_code_every=args.dead_code_every)
    cfg.validate()
    tcfg = TrainConfig(steps=args.steps, lr_codebook=args.lr_codebook, lr_model=args.lr_model,
                       freeze_model=args.freeze_model, warmup_steps=min(100, args.steps // 4), lr_schedule="cosine",
                       seed=args.seed)
    base_cfg = BaseConfig(steps=args.base_steps, seed=args.seed)
    check_int("--batch-size", args.batch_size, 1)
    check_int("--eval-samples", args.eval_samples, 1)
    check_device(args.device)
    kinds = [k.strip() for k in args.sites.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if not kinds or unknown:
        raise InvalidParameterError(f"--sites must be a comma-separated list of {list(KINDS)}; got {args.sites!r}")
    check_output(args.out, folder=True)
    fsm = TokFSM()
    model = pretrained(args.act_fn, device=args.device, config=base_cfg, verbose=not args.quiet)
    base = evaluate(model, fsm, n_samples=args.eval_samples, seed=1)
    sites = site_names(model, kinds)
    cbs, result = fit_tokfsm(model, fsm, sites, cfg, tcfg, batch_size=args.batch_size, seed=args.seed,
                             checkpoint_dir=Path(args.out) / "checkpoint", resume=True, verbose=not args.quiet)
    after = evaluate(model, fsm, n_samples=args.eval_samples, seed=1)
    held_out = list(fsm.sample(args.eval_samples, seed=10_000 + args.seed)[:, :-1].split(256))
    metrics = codebook_metrics(model, cbs, held_out)
    info = {"sites": sites, "codebook_config": cfg.to_dict(), "train_config": dataclasses.asdict(tcfg),
            "base": dataclasses.asdict(base), "with_codebooks": dataclasses.asdict(after),
            "metrics": {s: dataclasses.asdict(m) for s, m in metrics.items()}, "train_seconds": result.seconds}
    save_tokfsm_run(args.out, model, cbs, info)
    result.save(Path(args.out) / "train_result.json")
    dead = sum(m.dead_fraction for m in metrics.values()) / len(metrics)
    print(f"{len(sites)} codebooks x {args.n_codes} codes (k={args.k}) trained {args.steps} steps in "
          f"{result.seconds:.1f} s; transition accuracy {base.transition_accuracy:.4f} -> "
          f"{after.transition_accuracy:.4f}; mean dead-code fraction (held-out) {dead:.3f}; wrote {args.out}")
    return 0


def _cmd_steer(args: argparse.Namespace) -> int:
    from codebook.steer import fsm_state_steering
    from probe.core.device import check_device
    from probe.core.paths import check_output
    from probe.data.tokfsm import TokFSM

    check_device(args.device)
    if args.json:
        check_output(args.json)
    model, _ = load_tokfsm_run(args.run, device=args.device)
    sites = None if not args.sites else [s.strip() for s in args.sites.split(",") if s.strip()]
    res = fsm_state_steering(model, TokFSM(), n_pairs=args.pairs, n_samples=args.samples, sites=sites,
                             seed=args.seed, prompt_states=args.prompt_states, positions=args.positions)
    if args.json:
        res.save(args.json)
    print(json.dumps({k: v for k, v in res.__dict__.items() if k not in ("per_pair_success", "sites", "examples")}, indent=2))
    return 0


def add_commands(sub: Any) -> None:
    """Register ``codebook train-tokfsm`` and ``codebook steer`` on the ``neurospec`` sub-parser collection."""
    cb = sub.add_parser("codebook", help="codebook features: train VQ bottlenecks in transformers, steer with codes")
    cb_sub = cb.add_subparsers(dest="codebook_command", required=True)
    tr = cb_sub.add_parser("train-tokfsm", help="train (or load) a TokFSM model, attach codebooks, fine-tune, save")
    tr.add_argument("--out", required=True, help="output folder (model, codebooks, metrics; checkpoint for resume)")
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--act-fn", default="gelu", choices=["gelu", "relu"])
    tr.add_argument("--base-steps", type=int, default=1500, help="training steps of the base model (cached)")
    tr.add_argument("--sites", default="attn_z,mlp_out", help=f"comma-separated kinds among {KINDS}")
    tr.add_argument("--n-codes", type=int, default=10_000)
    tr.add_argument("--k", type=int, default=1)
    tr.add_argument("--similarity", default="cosine", choices=["cosine", "inner", "l2"])
    tr.add_argument("--dead-code-every", type=int, default=25)
    tr.add_argument("--commitment", type=float, default=0.25, help="weight of MSE(input, stop-grad(codes))")
    tr.add_argument("--steps", type=int, default=1000)
    tr.add_argument("--batch-size", type=int, default=128)
    tr.add_argument("--lr-codebook", type=float, default=1e-3)
    tr.add_argument("--lr-model", type=float, default=1e-4)
    tr.add_argument("--freeze-model", action="store_true")
    tr.add_argument("--eval-samples", type=int, default=256)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=_cmd_train_tokfsm)

    st = cb_sub.add_parser("steer", help="FSM state steering by code patching on a saved train-tokfsm run")
    st.add_argument("run", help="folder written by `neurospec codebook train-tokfsm`")
    st.add_argument("--device", default="cpu")
    st.add_argument("--pairs", type=int, default=100)
    st.add_argument("--samples", type=int, default=20)
    st.add_argument("--prompt-states", type=int, default=8)
    st.add_argument("--sites", default="", help="comma-separated codebook sites to patch (default: all)")
    st.add_argument("--positions", default="last", choices=["last", "state", "transition"],
                    help="patch the last token, both tokens of the state, or the last token and the generated digit")
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--json", default=None, help="also write the SteeringResult here")
    st.set_defaults(func=_cmd_steer)
