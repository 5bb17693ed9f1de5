"""Topic steering on SmolLM2-135M with per-head attention codebooks (``blocks.L.attn.hook_z``, one codebook per
head), against activation addition in the same run.

``benchmarks/lm_smollm2.py`` forces codes of MLP-output codebooks; this script forces codes of per-head attention
codebooks, as the Codebook Features paper attaches them: every head's output ``z`` (d_head 64) is replaced by its
nearest code (k=1, cosine, 128 codes per head, k-means on 128 training texts, no training). Topic codes are ranked
by ``codebook.rank_codes`` over the continuation positions of the topic's training texts (precision >= 0.5,
>= 10 hits; each code belongs to one head) and the top N are appended at every position while sampling
(``codebook.topic_steering``), for several N and two sets of layers. The activation-addition baseline (the
topic's mean residual difference after block 6, times a scale) runs in the same process, so both share the
machine's load. Protocol as in ``lm_smollm2.py``: 8 topics, 4 neutral prompts x 10 samples x 24 new tokens,
the keyword classifier, perplexity of the continuations under the unmodified model. The corpus is the cached
one of ``lm_smollm2.py`` (sampled once, about 4 minutes).

Run (about 30 minutes on 2 CPU cores, one torch thread; ``--device cuda`` on an accelerator, results in
``results/lm_smollm2_attention_gpu.json``):
    .venv/bin/python benchmarks/lm_smollm2_attention.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import write_result
from lm_smollm2 import WINDOW, device_label, log

import codebook
from probe import zoo
from probe.data.lmtext import NEUTRAL_PROMPTS, build_corpus, on_topic


def pct(v: float) -> str:
    return f"{v:.1%}"


def mean_row(method: str, r, unsteered: str, base_ppl: float) -> dict[str, str]:
    """One row of the table of means: a steering result ``r`` against its own unsteered continuations."""
    return {"method": method, "unsteered": pct(r.mean_baseline), "steered": pct(r.mean_steered),
            "gain (points)": f"{100 * (r.mean_steered - r.mean_baseline):+.1f}",
            "perplexity steered": f"{r.mean_steered_perplexity:.1f}",
            "perplexity unsteered": f"{r.baseline_perplexity:.1f} ({unsteered})",
            "ratio": f"{r.mean_steered_perplexity / r.baseline_perplexity:.2f}",
            "ratio to the unmodified model's unsteered": f"{r.mean_steered_perplexity / base_ppl:.2f}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default="3,9,15,21;3,6,9,12,15,18,21,24",
                    help="sets of layers with attention codebooks, ';'-separated")
    ap.add_argument("--force", default="8,16,32;16", help="codes forced per topic, one list per layer set")
    ap.add_argument("--codes", type=int, default=128, help="codes per head")
    ap.add_argument("--add-scales", type=float, nargs="+", default=[2.0, 3.0])
    ap.add_argument("--add-layer", type=int, default=6)
    ap.add_argument("--steer-prompts", type=int, default=4)
    ap.add_argument("--steer-samples", type=int, default=10)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1, ...")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    layer_sets = [[int(v) for v in s.split(",")] for s in args.layers.split(";")]
    forces = [[int(v) for v in s.split(",")] for s in args.force.split(";")]
    if len(forces) != len(layer_sets):
        ap.error("--force needs one list per layer set of --layers")
    device = device_label(args.device, ap)  # checked before anything loads
    t0 = time.perf_counter()
    model = zoo.load("smollm2-135m", device=args.device)
    corpus = build_corpus(model, n_samples=4, max_new_tokens=40)
    train, _ = corpus.split(0.25)
    # the reference: how often a topic's own opening gives a continuation of the steering length on the topic
    prompted = corpus.topic_agreement(args.new_tokens, model.tokenizer.decode)
    xt, yt = train.windows(WINDOW)
    cont = torch.arange(WINDOW)[None, :] >= torch.tensor(train.prompt_lengths)[:, None]
    names = train.topic_names
    init = xt[torch.randperm(len(xt), generator=torch.Generator().manual_seed(1))[:128]]
    init_batches = [init[i:i + 32] for i in range(0, len(init), 32)]
    prompts = list(NEUTRAL_PROMPTS[: args.steer_prompts])
    sampling = dict(n_samples=args.steer_samples, n_new=args.new_tokens, seed=0)
    log("model and corpus", t0)

    # activation addition on the unmodified model: its unsteered continuations are the reference perplexity
    site = f"blocks.{args.add_layer}.hook_resid_post"
    diffs = codebook.mean_differences(model, xt, yt, range(len(names)), site, mask=cont)
    vectors = {tp: diffs[i] for i, tp in enumerate(names)}
    adds = {}
    for scale in args.add_scales:
        t = time.perf_counter()
        adds[scale] = codebook.addition_steering(model, vectors, prompts, on_topic, site=site, scale=scale, **sampling)
        log(f"addition x{scale:g} ({time.perf_counter() - t:.0f} s): {adds[scale].mean_steered:.3f} "
            f"ppl {adds[scale].mean_steered_perplexity:.1f}", t0)
    base_ppl = next(iter(adds.values())).baseline_perplexity

    runs = []
    for layers, ns in zip(layer_sets, forces, strict=True):
        sites = [f"blocks.{L}.attn.hook_z" for L in layers]
        cbs = codebook.attach(model, sites, codebook.CodebookConfig(n_codes=args.codes, k=1))
        t = time.perf_counter()
        codebook.init_codebooks(model, cbs, init_batches)
        init_s = time.perf_counter() - t
        codes = codebook.collect_codes(model, xt, batch_size=32)
        ranked = {tp: codebook.rank_codes(model, xt, yt, i, mask=cont, codes=codes, n=max(ns), min_hits=10)
                  for i, tp in enumerate(names)}
        for n in ns:
            t = time.perf_counter()
            res = codebook.topic_steering(model, {tp: r[:n] for tp, r in ranked.items() if r}, prompts, on_topic,
                                          mode="append", **sampling)
            secs = time.perf_counter() - t
            heads = {(st.site, st.group) for r in ranked.values() for st in r[:n]}
            runs.append({"layers": layers, "n": n, "res": res, "init_s": init_s, "heads": len(heads),
                         "precision": sum(st.precision for r in ranked.values() for st in r[:n])
                         / max(1, sum(len(r[:n]) for r in ranked.values()))})
            log(f"layers {layers} n={n} ({secs:.0f} s): {res.mean_baseline:.3f} -> {res.mean_steered:.3f}, ppl "
                f"{res.mean_steered_perplexity:.1f} (unsteered {res.baseline_perplexity:.1f})", t0)
        codebook.detach(model)

    def ok(r) -> bool:
        return r.mean_steered_perplexity <= 2 * r.baseline_perplexity

    rows = [mean_row(f"attention codes, layers {','.join(map(str, run['layers']))}, {run['n']} codes per topic",
                     run["res"], "codebook model", base_ppl) for run in runs]
    rows += [mean_row(f"activation addition after block {args.add_layer}, scale {scale:g}", r, "unmodified model",
                      base_ppl) for scale, r in adds.items()]
    rows.append({"method": f"no steering: the topics' own openings (the corpus's first {args.new_tokens} sampled "
                           "tokens, for reference)", "unsteered": "", "steered": pct(sum(prompted.values()) / len(prompted)),
                 "gain (points)": "", "perplexity steered": "", "perplexity unsteered": "", "ratio": "",
                 "ratio to the unmodified model's unsteered": ""})
    fair = [run for run in runs if ok(run["res"])] or runs
    best = max(fair, key=lambda run: run["res"].mean_steered - run["res"].mean_baseline)
    fair_add = [s for s, r in adds.items() if ok(r)] or list(adds)
    best_add = max(fair_add, key=lambda s: adds[s].mean_steered - adds[s].mean_baseline)
    b, a = best["res"], adds[best_add]
    topic_rows = [{"topic": tp, "unsteered": f"{b.baseline[tp]:.0%}", "codes forced": f"{b.steered[tp]:.0%}",
                   "perplexity (codes)": f"{b.steered_perplexity[tp]:.1f}",
                   f"activation addition x{best_add:g}": f"{a.steered[tp]:.0%}",
                   "perplexity (addition)": f"{a.steered_perplexity[tp]:.1f}",
                   "the topic's own openings": f"{prompted[tp]:.0%}",
                   "example (codes forced)": (b.examples.get(tp) or [""])[0][:90].replace("\n", " ").replace("|", "/")}
                  for tp in names if tp in b.steered]
    label = f"layers {','.join(map(str, best['layers']))}, {best['n']} codes"
    notes = [
        f"attention codebooks: blocks.L.attn.hook_z, one per head ({model.cfg.n_heads} heads of d_head "
        f"{model.cfg.d_head}), {args.codes} codes, k=1, cosine, k-means on {init.numel()} tokens of {len(init)} training "
        f"texts (no training); k-means took {runs[0]['init_s']:.0f} s for {len(layer_sets[0])} layers",
        "topic codes: codebook.rank_codes over the continuation positions of the topic's 32 training texts "
        "(precision >= 0.5, >= 10 hits), the top N appended at every position; their mean training precision: "
        + ", ".join(f"{','.join(map(str, r['layers']))}/N={r['n']}: {r['precision']:.2f} in {r['heads']} heads"
                    for r in runs),
        f"sampling: {len(prompts)} neutral prompts x {args.steer_samples} samples x {args.new_tokens} new tokens per "
        "topic, temperature 0.8, top-p 0.95, KV cache, the same seeds for every method; on-topic: keyword classifier "
        "(probe.data.lmtext.on_topic) on the continuation; perplexity of the continuations given the prompt under the "
        f"unmodified model (the unmodified model's own unsteered continuations: {base_ppl:.1f})",
        f"best within 2x its unsteered perplexity: codes {label} ({100 * (b.mean_steered - b.mean_baseline):+.1f} "
        f"points), activation addition x{best_add:g} ({100 * (a.mean_steered - a.mean_baseline):+.1f} points); "
        "target of the issue: +60 points within 2x",
        f"whole run {(time.perf_counter() - t0) / 60:.1f} min on {device}",
    ]
    log("done", t0)
    if not args.no_write:
        name = "lm_smollm2_attention" if args.device == "cpu" else "lm_smollm2_attention_gpu"
        path = write_result(name, "python benchmarks/lm_smollm2_attention.py "
                            + " ".join(sys.argv[1:]), {
                                "title": "SmolLM2-135M: topic steering with per-head attention codes vs activation "
                                         f"addition ({'CPU' if args.device == 'cpu' else device}, one run)",
                                "notes": notes, "settings": vars(args), "tables": [
                                    {"caption": "Mean over 8 topics: share of continuations on the topic, and their "
                                                "perplexity under the unmodified model", "columns": list(rows[0]),
                                     "rows": rows},
                                    {"caption": f"Per topic: attention codes ({label}) and activation addition "
                                                f"x{best_add:g}", "columns": list(topic_rows[0]), "rows": topic_rows}]})
        log(f"wrote {path}", t0)


if __name__ == "__main__":
    main()
