"""Codebook features on TokFSM (issue: codebook). One run measures every figure of the issue:

1. the base TokFSM model (4 layers, d_model 128, 4 heads, d_mlp 512; cached by ``probe.zoo.tokfsm.pretrained``):
   transition accuracy of sampled generations;
2. per-head attention codebooks on ``blocks.L.attn.hook_z`` (one codebook per head, all heads in one batched
   matmul) plus MLP-output codebooks on ``blocks.L.hook_mlp_out``, all layers, ``--n-codes`` codes each, k=1,
   cosine similarity, k-means initialised from real activations, dead codes re-seeded every
   ``--dead-code-every`` steps; model fine-tuned jointly (separate learning rates): transition accuracy;
3. dead-code fraction and per-codebook metrics on held-out sequences;
4. state codes: for each FSM state the best code (F1) at second-digit positions, its precision, and the best
   single MLP neuron's precision at the same recall; share of states whose code beats the best neuron;
5. FSM state steering by all-layer code patching: success rate and normalised JS divergence;
6. training step time with and without the codebooks (same model, batch, device; median over steps after
   warm-up, ``torch.cuda.synchronize`` around each step; learning rate 0 so the timing leaves weights alone).

Run (GPU, the figures): python benchmarks/codebook_tokfsm.py --device cuda --out runs/codebook_tokfsm
Run (CPU smoke, tiny settings, < 3 min): python benchmarks/codebook_tokfsm.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import write_result

from codebook import (
    CodebookConfig,
    TrainConfig,
    codebook_metrics,
    fit_tokfsm,
    fsm_state_steering,
    search_by_labels,
    site_names,
)
from codebook.cli import save_tokfsm_run
from probe.data.tokfsm import TokFSM, TokFSMConfig
from probe.zoo.tokfsm import TokFSMTrainConfig as BaseConfig
from probe.zoo.tokfsm import evaluate, lm_loss, make_model, pretrained, train_model

QUICK_ARCH = {"n_layers": 2, "d_model": 32, "n_heads": 2, "d_head": 16, "d_mlp": 64}


def log(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(model, fsm, cbs, device: str, batch_size: int, warmup: int, steps: int) -> dict:
    """Per-step wall time of the training step that ``codebook.train`` runs (same ops), learning rate 0."""
    params = list(model.parameters()) + (list(cbs.parameters()) if cbs is not None else [])
    fused = device.startswith("cuda")
    opt = torch.optim.AdamW(params, lr=0.0, fused=fused) if fused else torch.optim.AdamW(params, lr=0.0)
    batches = [fsm.sample(batch_size, seed=900_000 + i).to(device) for i in range(min(8, warmup + steps))]
    bad = torch.zeros((), dtype=torch.bool, device=device)
    acc = torch.zeros(2, device=device)
    times: list[float] = []
    model.train()
    for i in range(warmup + steps):
        tokens = batches[i % len(batches)]
        sync(device)
        t = time.perf_counter()
        task = lm_loss(model, tokens)
        cb = cbs.loss() if cbs is not None else torch.zeros((), device=device)
        loss = task + cb
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        bad |= ~torch.isfinite(loss.detach())
        acc += torch.stack([task.detach(), cb.detach()]).float()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    out = {"median_s": statistics.median(times), "mean_s": statistics.fmean(times), "steps": len(times),
           "times_s": times}
    if cbs is not None:  # the dead-code replacement runs every N steps: its cost, amortised
        sync(device)
        t = time.perf_counter()
        cbs.replace_dead_codes(None, opt)
        sync(device)
        out["dead_code_replacement_s"] = time.perf_counter() - t
    opt.zero_grad(set_to_none=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="tiny settings for a CPU smoke run (< 3 min)")
    ap.add_argument("--out", default=None, help="folder for the trained model + codebooks (default: a temp dir)")
    ap.add_argument("--base-steps", type=int, default=None, help="base model training steps (default 1500)")
    ap.add_argument("--steps", type=int, default=None, help="codebook fine-tuning steps (default 2000)")
    ap.add_argument("--n-codes", type=int, default=None, help="codes per codebook (default 10000)")
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=None, help="sequences per step (default 128)")
    ap.add_argument("--lr-codebook", type=float, default=1e-3)
    ap.add_argument("--lr-model", type=float, default=1e-4)
    ap.add_argument("--commitment", type=float, default=0.25)
    ap.add_argument("--dead-code-every", type=int, default=None, help="default 25 (quick: 8)")
    ap.add_argument("--eval-samples", type=int, default=None, help="generations for transition accuracy (256)")
    ap.add_argument("--held-out", type=int, default=None, help="held-out sequences for dead codes (2048)")
    ap.add_argument("--search-seqs", type=int, default=None, help="sequences for the state-code search (512)")
    ap.add_argument("--pairs", type=int, default=None, help="steering pairs (100)")
    ap.add_argument("--samples", type=int, default=20, help="sampled next states per steering pair")
    ap.add_argument("--timing-steps", type=int, default=None, help="timed steps after warm-up (100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results")
    args = ap.parse_args()
    q = args.quick
    pick = lambda v, full, quick: v if v is not None else (quick if q else full)  # noqa: E731
    base_steps = pick(args.base_steps, 1500, 40)
    steps = pick(args.steps, 2000, 24)
    n_codes = pick(args.n_codes, 10_000, 256)
    batch = pick(args.batch_size, 128, 16)
    dead_every = pick(args.dead_code_every, 25, 8)
    eval_samples = pick(args.eval_samples, 256, 8)
    held_out = pick(args.held_out, 2048, 32)
    search_seqs = pick(args.search_seqs, 512, 32)
    pairs = pick(args.pairs, 100, 8)
    samples = args.samples if not q else min(args.samples, 5)
    timing_steps = pick(args.timing_steps, 100, 4)
    warmup = 2 if q else 20
    device = args.device
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda but no CUDA device is available")
        torch.backends.cuda.matmul.allow_tf32 = True  # both timings (with and without codebooks) use TF32
        torch.backends.cudnn.allow_tf32 = True
    if q and device == "cpu":
        torch.set_num_threads(1)  # tiny models on a small shared CPU: one thread is several times faster
    t0 = time.perf_counter()
    fsm = TokFSM(TokFSMConfig(seq_states=16)) if q else TokFSM()  # quick: 33-token sequences
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="codebook_tokfsm_"))

    # 1. base model
    if q:
        model = make_model("gelu", seed=args.seed, device=device, **QUICK_ARCH)
        train_model(model, fsm, BaseConfig(steps=base_steps, batch_size=batch, seed=args.seed), verbose=False)
    else:
        model = pretrained("gelu", device=device, config=BaseConfig(steps=base_steps, seed=args.seed), verbose=True)
    model.to(device)
    base = evaluate(model, fsm, n_samples=eval_samples, seed=1, device=device)
    log(f"base model: transition accuracy {base.transition_accuracy:.4f}", t0)
    base_time = time_steps(model, fsm, None, device, batch, warmup, timing_steps)
    log(f"base step time: median {base_time['median_s'] * 1e3:.2f} ms", t0)

    # 2. codebooks: attach, k-means init, fine-tune jointly
    sites = site_names(model, ["attn_z", "mlp_out"])
    cfg = CodebookConfig(n_codes=n_codes, k=args.k, similarity="cosine", commitment=args.commitment,
                         dead_code_every=dead_every)
    tcfg = TrainConfig(steps=steps, lr_codebook=args.lr_codebook, lr_model=args.lr_model,
                       warmup_steps=min(100, steps // 4), lr_schedule="cosine", check_every=min(100, steps), seed=args.seed)
    cbs, result = fit_tokfsm(model, fsm, sites, cfg, tcfg, batch_size=batch, init_sequences=512 if not q else 32,
                             seed=args.seed, verbose=not q)
    log(f"fine-tuned {steps} steps in {result.seconds:.1f} s; last losses {result.history[-1]}", t0)
    after = evaluate(model, fsm, n_samples=eval_samples, seed=1, device=device)
    log(f"with codebooks: transition accuracy {after.transition_accuracy:.4f}", t0)

    # 3. dead codes and metrics on held-out sequences
    held = fsm.sample(held_out, seed=123_457)[:, :-1]
    tokens_per_seq = held.shape[1]
    metrics = codebook_metrics(model, cbs, list(held.split(256)))
    dead = {s: m.dead_fraction for s, m in metrics.items()}
    log(f"dead-code fraction (held-out): mean {statistics.fmean(dead.values()):.3f}, max {max(dead.values()):.3f}", t0)

    # 4. state codes vs best neuron
    tok = fsm.sample(search_seqs, seed=223_457)[:, :-1]
    digit = fsm.digit_index(tok)
    labels = torch.where(digit == 1, fsm.state_ids(tok), torch.full_like(tok, -1))
    search = search_by_labels(model, tok, labels, mask=digit >= 0)
    log(f"state codes: {search.summary()}", t0)

    # 5. steering
    steers = {mode: fsm_state_steering(model, fsm, n_pairs=pairs, n_samples=samples, prompt_states=8,
                                       seed=args.seed, positions=mode) for mode in ("last", "state", "transition")}
    steer = steers["last"]
    for mode, st in steers.items():
        log(f"steering ({mode}): success {st.success_rate:.4f} (exact {st.expected_success:.4f}), normalised JS "
            f"{st.normalized_js:.4f}", t0)

    # 6. step time with codebooks
    cb_time = time_steps(model, fsm, cbs, device, batch, warmup, timing_steps)
    amort = cb_time["median_s"] + cb_time["dead_code_replacement_s"] / max(1, dead_every)
    ratio = cb_time["median_s"] / base_time["median_s"]
    log(f"codebook step time: median {cb_time['median_s'] * 1e3:.2f} ms (x{ratio:.2f}); with amortised "
        f"dead-code replacement x{amort / base_time['median_s']:.2f}", t0)

    # artifacts
    info = {"sites": sites, "codebook_config": cfg.to_dict(), "train_config": dataclasses.asdict(tcfg),
            "base": dataclasses.asdict(base), "with_codebooks": dataclasses.asdict(after),
            "metrics": {s: dataclasses.asdict(m) for s, m in metrics.items()}}
    save_tokfsm_run(out_dir, model, cbs, info)
    result.save(out_dir / "train_result.json")
    search.save(out_dir / "state_codes.json")
    for mode, st in steers.items():
        st.save(out_dir / f"steering_{mode}.json")
    log(f"artifacts in {out_dir}", t0)
    # the base step once more, now without codebooks (detached), so that GPU clock drift between the two
    # measurements does not decide the ratio: the base figure is the median over both runs' steps
    cbs.detach()
    base_time2 = time_steps(model, fsm, None, device, batch, warmup, timing_steps)
    base_all = base_time["times_s"] + base_time2["times_s"]
    base_median = statistics.median(base_all)
    ratio = cb_time["median_s"] / base_median
    log(f"base step time again: median {base_time2['median_s'] * 1e3:.2f} ms; ratio over both runs x{ratio:.3f}", t0)

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none (CPU)"
    mean_dead = statistics.fmean(dead.values())
    figures = [
        {"figure": "base transition accuracy", "value": f"{base.transition_accuracy:.4f}", "target": ">= 0.95",
         "paper": "0.9677"},
        {"figure": "transition accuracy, attn (per head) + MLP codebooks, all layers",
         "value": f"{after.transition_accuracy:.4f}", "target": ">= 0.90", "paper": "0.6365"},
        {"figure": "dead codes on held-out data (mean over codebooks)", "value": f"{mean_dead:.4f}",
         "target": "<= 0.50", "paper": "0.93-0.997 (released model)"},
        {"figure": "dead codes, worst codebook", "value": f"{max(dead.values()):.4f}", "target": "<= 0.50",
         "paper": ""},
        {"figure": "state codes: average precision", "value": f"{search.average_precision:.4f}",
         "target": ">= 0.97", "paper": "0.971"},
        {"figure": "best neuron at matched recall: average precision",
         "value": f"{search.neuron_average_precision:.4f}", "target": "", "paper": "0.705"},
        {"figure": "share of states whose code beats the best neuron", "value": f"{search.share_beating_neuron:.4f}",
         "target": "", "paper": ""},
        {"figure": "share of states whose code is at least as precise as the best neuron",
         "value": f"{search.share_matching_neuron:.4f}", "target": "", "paper": ""},
        {"figure": "state steering success, all-layer code patching at the last token",
         "value": f"{steer.success_rate:.4f}", "target": ">= 0.95", "paper": "no success rate"},
        {"figure": "normalised JS divergence after last-token steering (0 = target distribution)",
         "value": f"{steer.normalized_js:.4f}", "target": "", "paper": ""},
        {"figure": "steering success, patching both tokens of the state",
         "value": f"{steers['state'].success_rate:.4f}", "target": "", "paper": ""},
        {"figure": "steering success, patching the last token and the generated first digit (transition)",
         "value": f"{steers['transition'].success_rate:.4f}", "target": "", "paper": ""},
        {"figure": "normalised JS divergence after transition steering",
         "value": f"{steers['transition'].normalized_js:.4f}", "target": "", "paper": ""},
        {"figure": "step time with / without codebooks (median)", "value": f"{ratio:.3f}", "target": "<= 1.5",
         "paper": ""},
    ]
    per_cb = [{"site": s, "dead fraction": f"{m.dead_fraction:.4f}", "MSE": f"{m.mse:.5f}",
               "usage entropy": f"{m.usage_entropy:.3f}", "code norm": f"{m.code_norm:.3f}",
               "groups": m.n_groups} for s, m in metrics.items()]
    payload = {
        "title": "codebook features on TokFSM" + (" (quick CPU smoke settings)" if q else ""),
        "notes": [
            f"Device: {device} ({gpu}). Base model: {'tiny quick model ' + json.dumps(QUICK_ARCH) if q else '4 layers, d_model 128, 4 heads, d_mlp 512'}, "
            f"trained {base_steps} steps (batch 128{'; quick: ' + str(batch) if q else ''}).",
            f"Codebooks: {len(sites)} sites ({', '.join(sites)}); {n_codes} codes each (per head for hook_z), "
            f"k={args.k}, cosine similarity, k-means init from real activations, dead codes re-seeded every "
            f"{dead_every} steps; fine-tuned {steps} steps, batch {batch}, lr codebook {args.lr_codebook}, "
            f"lr model {args.lr_model} (warm-up, cosine decay), commitment {args.commitment}; fine-tuning took {result.seconds:.1f} s.",
            f"Transition accuracy: share of valid consecutive state pairs in {eval_samples} sampled generations "
            f"of {fsm.config.seq_states} states from BOS (temperature 1).",
            f"Dead codes: codes never selected on {held_out} held-out sequences ({held_out * tokens_per_seq} tokens); "
            "per-head codebooks count every head's codes.",
            f"State codes: {search_seqs} sequences; a position's class is the state whose second digit it is "
            "(first-digit positions are negatives, BOS excluded); per state the code (over all codebooks and "
            "heads) with the best F1; the neuron baseline thresholds every MLP hidden unit (hook_post, all layers) "
            "at the code's recall and takes the most precise.",
            f"Steering: {steer.n_pairs} (A, B) pairs with disjoint successor sets, prompts of 8 states; the codes "
            f"of the B prompt's last token patched into the A prompt's last token at all {len(sites)} codebooks; "
            f"{steer.n_samples} sampled next states per pair; success = successor of B (never of A). Variants: "
            "'state' also patches the state's first digit; 'transition' also patches, while the next state is "
            "generated, its first digit with the codes the B prompt gives after that same digit. Normalised "
            "JS = JSD(steered next-state distribution, B's true one) / JSD(unsteered, B's true one). Unsteered "
            f"chance of success: {steer.baseline_success:.4f}.",
            f"Step time: median of {timing_steps} steps after {warmup} warm-up steps, synchronised around each step, "
            f"learning rate 0 (same ops as codebook.train); base measured before attaching and again after "
            f"detaching ({base_time['median_s'] * 1e3:.2f} / {base_time2['median_s'] * 1e3:.2f} ms, median over both "
            f"{base_median * 1e3:.2f} ms), with codebooks {cb_time['median_s'] * 1e3:.2f} ms; one dead-code "
            f"replacement of all codebooks {cb_time['dead_code_replacement_s'] * 1e3:.2f} ms (every {dead_every} "
            f"steps, amortised ratio {(cb_time['median_s'] + cb_time['dead_code_replacement_s'] / dead_every) / base_median:.3f}). "
            "TF32 matmuls on CUDA for both; codebook scores in float16.",
            f"Total benchmark wall time {time.perf_counter() - t0:.0f} s.",
        ],
        "tables": [
            {"caption": "Figures", "columns": ["figure", "value", "target", "paper"], "rows": figures},
            {"caption": "Per codebook (held-out)", "columns": ["site", "dead fraction", "MSE", "usage entropy",
                                                               "code norm", "groups"], "rows": per_cb},
        ],
        "raw": {"base": dataclasses.asdict(base), "with_codebooks": dataclasses.asdict(after),
                "base_step": {k: v for k, v in base_time.items() if k != "times_s"},
                "base_step_after": {k: v for k, v in base_time2.items() if k != "times_s"},
                "codebook_step": {k: v for k, v in cb_time.items() if k != "times_s"}, "search": search.summary(),
                "steering": {mode: {k: v for k, v in dataclasses.asdict(st).items() if k != "per_pair_success"}
                             for mode, st in steers.items()},
                "history": result.history, "device": device, "gpu": gpu},
    }
    name = "codebook_tokfsm_quick" if q else ("codebook_tokfsm" if device == "cuda" else "codebook_tokfsm_cpu")
    if not args.no_write:
        path = write_result(name, "python benchmarks/codebook_tokfsm.py " + " ".join(sys.argv[1:]), payload)
        log(f"wrote {path}", t0)
    print(json.dumps({r["figure"]: r["value"] for r in figures}, indent=2))


if __name__ == "__main__":
    main()
