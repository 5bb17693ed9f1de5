"""A real pretrained language model on a CPU, offline: SmolLM2-135M-Instruct (``probe.zoo.load("smollm2-135m")``).

Parts (``--parts``, all by default):

1. ``load``: dequantise time (from the cache entry's record), cached load time, greedy generation speed with
   and without the key/value cache (and that both give the same tokens).
2. ``corpus``: the topic corpus written by the model itself (``probe.data.lmtext.build_corpus``: 8 topics x 10
   openings x ``--samples`` continuations of 40 tokens), cached; keyword-classifier agreement with the topics.
3. ``moe``: ``probe.moe.detect`` on the gated SiLU MLPs of ``--moe-layers`` (64 experts of 24 neurons, top 25%):
   coverage of each partitioner versus random partitions, and next-token accuracy on held-out text with only
   25% / 50% of the experts of those layers active (parameter-free ``avg_k`` router).
4. ``codebook``: per-head attention codebooks on ``blocks.L.attn.hook_z`` (k-means only) and codebooks (k=1,
   cosine) on ``blocks.L.hook_mlp_out`` of ``--cb-layers``, k-means initialised on the training texts and
   trained briefly with the language-model loss (model frozen); held-out loss and perplexity without
   codebooks, with k-means codes and after training, dead codes, and the training step time against a plain
   training step of the base model; codes for each topic's keywords (``codebook.search_by_labels``) and the
   topic codes forced for steering (``codebook.rank_codes``, ``--topic-codes``); topic steering, the paper's
   protocol: the topic codes appended at every position while sampling continuations of ``--steer-prompts``
   neutral prompts x ``--steer-samples``, share on the topic by the keyword classifier and perplexity under
   the unmodified model, against the same sampling without forcing; and the activation-addition baseline
   (``codebook.addition_steering``: the topic's mean residual difference at ``--add-layer`` times each of
   ``--add-scales``, on the model without codebooks), measured the same way.

Run (about 20-25 minutes on 2 busy CPU cores, one torch thread; the corpus adds ~4 min the first time):
    .venv/bin/python benchmarks/lm_smollm2.py
The full setting on an accelerator (``--preset gpu``: codebooks and experts at all 30 layers, 4,096 MLP codes and
512 codes per attention head, 1,000 training steps of 32 texts, 16 continuations per corpus opening; results in
``results/lm_smollm2_gpu.json``, the device named in the notes):
    .venv/bin/python benchmarks/lm_smollm2.py --preset gpu --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import write_result

import codebook
from probe import moe, zoo
from probe.core.device import resolve_device
from probe.core.errors import InvalidParameterError
from probe.data.lmtext import NEUTRAL_PROMPTS, build_corpus, on_topic, topic_pattern
from probe.zoo.lm import lm_cache_path

WINDOW = 43  # every corpus text has at least this many tokens (prompt of 3-9 + 40 sampled)
#: How topic codes are found: over the tokens the topic's keyword regex matches (the paper's code search), or
#: over every continuation position of the topic's texts.
CODE_SEARCH = {"keyword": "tokens matching the topic's keyword regex, precision >= 0.3, recall >= 0.05, >= 3 hits",
               "text": "continuation positions of the topic's texts, precision >= 0.5, >= 10 hits"}


#: Sizes of a run. "cpu": minutes on a 2-core machine (the figures in RESULTS.md). "gpu": the full setting for
#: an accelerator: codebooks and experts at every one of the 30 layers, larger codebooks, longer training on a
#: larger corpus (16 continuations per opening); the steering protocol (prompts, samples, new tokens) is the same.
PRESETS: dict[str, dict[str, object]] = {
    "cpu": {"samples": 4, "moe_layers": [3, 15, 27], "cb_layers": [3, 9, 15, 21], "n_codes": 512, "attn_codes": 128,
            "steps": 60, "init_texts": 128, "batch": 8, "eval_texts": 64},
    "gpu": {"samples": 16, "moe_layers": list(range(30)), "cb_layers": list(range(30)), "n_codes": 4096,
            "attn_codes": 512, "steps": 1000, "init_texts": 512, "batch": 32, "eval_texts": 256},
}


def device_label(device: str, ap: argparse.ArgumentParser | None = None) -> str:
    """Check ``device`` and describe it for the results; on a CPU the run uses one torch thread (two were
    5-10x slower on a loaded 2-core machine). A device that is not available raises the typed error, or with
    ``ap`` (before anything loads) ends the script with argparse's one-line usage error."""
    from probe.core.device import check_device

    try:
        dev = check_device(device)
    except InvalidParameterError as err:
        if ap is None:
            raise
        ap.error(str(err))
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    torch.set_num_threads(1)
    return f"{dev.type} (one torch thread)"


def log(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)


@torch.no_grad()
def lm_eval(model, tokens: torch.Tensor, batch: int = 16) -> dict[str, float]:
    """Mean next-token cross-entropy and accuracy over ``tokens``."""
    loss, correct, n = 0.0, 0, 0
    dev = resolve_device(model, None)
    for i in range(0, len(tokens), batch):
        x = tokens[i:i + batch].to(dev)
        logits = model(x)[:, :-1].float()
        tgt = x[:, 1:]
        loss += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                        reduction="sum"))
        correct += int((logits.argmax(-1) == tgt).sum())
        n += tgt.numel()
    return {"loss": loss / n, "accuracy": correct / n}


def keyword_labels(tok, tokens: torch.Tensor, names: list[str]) -> torch.Tensor:
    """Per token, the index of the first topic whose keyword regex matches it (-1: none)."""
    pieces = [[tok.decode([int(i)]) for i in row] for row in tokens.tolist()]
    labels = torch.full(tokens.shape, -1, dtype=torch.long)
    for i, topic in enumerate(names):
        labels = torch.where((codebook.regex_labels(pieces, topic_pattern(topic)) > 0) & (labels < 0), i, labels)
    return labels


def part_load(model, t0: float, device: str = "cpu") -> tuple[list[dict], list[str]]:
    info = json.loads((lm_cache_path("smollm2-135m") / "info.json").read_text())
    t = time.perf_counter()
    zoo.load("smollm2-135m", device=device)
    load_s = time.perf_counter() - t
    prompt = model.to_tokens("The capital of France is")
    rows, same = [], None
    outs = {}
    for cached in (True, False):
        t = time.perf_counter()
        with torch.no_grad():
            outs[cached] = model.generate(prompt, max_new_tokens=32, do_sample=False, use_past_kv_cache=cached,
                                          verbose=False, return_type="tokens")
        dt = time.perf_counter() - t
        rows.append({"figure": f"greedy generation, 32 tokens, batch 1, {'with' if cached else 'without'} KV cache",
                     "value": f"{32 / dt:.1f} tokens/s"})
    same = torch.equal(outs[True], outs[False])
    rows = [{"figure": "dequantise the GGUF file to float32 (first load, cached afterwards)",
             "value": f"{info['dequantise_seconds']:.1f} s"},
            {"figure": "load from the cache (safetensors) and wrap in a TransformerBridge", "value": f"{load_s:.1f} s"},
            *rows,
            {"figure": "cached and uncached greedy generation give the same tokens", "value": str(same)}]
    text = model.tokenizer.decode(outs[True][0])
    log(f"load: {rows}", t0)
    return rows, [f"greedy continuation: {text!r}"]


def part_moe(model, train, ev, layers: list[int], t0: float) -> tuple[list[dict], list[dict], list[str]]:
    xt, _ = train.windows(WINDOW)
    xe, _ = ev.windows(WINDOW)
    fit = [xt[i:i + 16] for i in range(0, len(xt), 16)]
    test = [xe[i:i + 16] for i in range(0, min(len(xe), 32), 16)]
    t = time.perf_counter()
    rep = moe.detect(model, fit, layers=layers, n_experts=64, method=["activations", "graph", "weights", "random"],
                     routers=("avg_k",), fractions=(0.25, 0.5), eval_loader=test, max_tokens=4096, n_random=5,
                     verbose=False)
    secs = time.perf_counter() - t
    rows = []
    for layer in rep.layers:
        m = rep.metrics[layer]
        row = {"layer": layer, "sparsity (gate closed)": f"{m['sparsity']:.3f}",
               "random": f"{rep.coverage(layer, 'random'):.3f} ± {m['random_coverage_std'][rep.top_k - 1]:.3f}"}
        for meth in ("activations", "graph", "weights"):
            row[meth] = f"{rep.coverage(layer, meth):.3f} ({rep.gain(layer, meth):+.1f})"
        row["modularity (activations / random)"] = (f"{m['modularity']['activations']:.3f} / "
                                                   f"{m['modularity']['random']:.3f}")
        rows.append(row)
    dense = rep.task["dense"]["accuracy"]
    task_rows = []
    for meth in ("activations", "graph", "weights", "random"):
        vals = rep.task["curves"][meth]["avg_k"]
        task_rows.append({"partition": meth, **{
            f"{int(f * 100)}% of experts": f"{v['accuracy']:.3f} ({v['accuracy'] / dense:.1%} of dense)"
            for f, v in zip(rep.task["fractions"], vals, strict=True)}})
    notes = [f"MoE: layers {layers}, 64 experts x 24 neurons, top-16 (25%); {rep.settings['fit_tokens']} tokens fit "
             f"the partitions, {rep.settings['eval_tokens']} measure coverage; next-token accuracy on "
             f"{sum(t.numel() for t in test)} held-out tokens (dense {dense:.3f}); detect() took {secs:.0f} s"]
    log(f"moe: {rows} {task_rows}", t0)
    return rows, task_rows, notes


def part_codebook(model, train, ev, args, t0: float) -> tuple[list[dict], list[dict], list[dict], list[str]]:
    xt, _ = train.windows(WINDOW)
    xe, _ = ev.windows(WINDOW)
    ev_tokens = xe[: args.eval_texts]
    base = lm_eval(model, ev_tokens)
    log(f"base eval {base}", t0)
    init_texts = xt[torch.randperm(len(xt), generator=torch.Generator().manual_seed(1))[: args.init_texts]]
    init_batches = [init_texts[i:i + 32] for i in range(0, len(init_texts), 32)]
    # a plain training step of the base model (forward + backward through every weight), the step-time reference
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(xt), generator=g)
    batches = [xt[order[i:i + args.batch]] for i in range(0, len(xt) - args.batch + 1, args.batch)]
    grads = [q.requires_grad for q in model.parameters()]
    for q in model.parameters():
        q.requires_grad_(True)
    plain = []
    for b in batches[:3]:
        t = time.perf_counter()
        model(b.to(resolve_device(model, None)), return_type="loss").backward()
        plain.append(time.perf_counter() - t)
    model.zero_grad(set_to_none=True)
    for q, r in zip(model.parameters(), grads, strict=True):
        q.requires_grad_(r)
    plain_step = sorted(plain)[1]
    # per-head attention codebooks (blocks.L.attn.hook_z, one codebook per head), k-means initialised only
    attn_sites = [f"blocks.{L}.attn.hook_z" for L in args.cb_layers]
    attn = codebook.attach(model, attn_sites, codebook.CodebookConfig(n_codes=args.attn_codes, k=1))
    t = time.perf_counter()
    codebook.init_codebooks(model, attn, init_batches)
    attn_init_s = time.perf_counter() - t
    attn_eval = lm_eval(model, ev_tokens)
    attn_dead = codebook.codebook_metrics(model, attn, [ev_tokens])
    attn_dead = sum(m.dead_fraction for m in attn_dead.values()) / len(attn_dead)
    codebook.detach(model)
    log(f"attention codebooks (k-means) {attn_init_s:.0f} s, eval {attn_eval}, dead {attn_dead:.2f}", t0)
    sites = [f"blocks.{L}.hook_mlp_out" for L in args.cb_layers]
    cfg = codebook.CodebookConfig(n_codes=args.n_codes, k=1, commitment=0.25, dead_code_every=10)
    cbs = codebook.attach(model, sites, cfg)
    t = time.perf_counter()
    codebook.init_codebooks(model, cbs, init_batches)
    init_s = time.perf_counter() - t
    km = lm_eval(model, ev_tokens)
    log(f"k-means init {init_s:.0f} s, eval {km}", t0)
    res = codebook.train(model, cbs, batches, codebook.TrainConfig(
        steps=args.steps, lr_codebook=1e-3, freeze_model=True, lr_schedule="cosine", check_every=5),
        verbose=False)
    trained = lm_eval(model, ev_tokens)
    log(f"trained {args.steps} steps in {res.seconds:.0f} s, eval {trained}", t0)
    metrics = codebook.codebook_metrics(model, cbs, [ev_tokens])
    dead = sum(m.dead_fraction for m in metrics.values()) / len(metrics)
    step = res.seconds / max(1, res.steps)

    def row(name: str, ev: dict, dead_share: str = "") -> dict:
        return {"model": name, "held-out loss": f"{ev['loss']:.3f}", "perplexity": f"{math.exp(ev['loss']):.1f}",
                "next-token accuracy": f"{ev['accuracy']:.3f}", "dead codes": dead_share}

    loss_rows = [
        row("SmolLM2-135M (no codebooks)", base),
        row(f"+ per-head attention codebooks at hook_z ({args.attn_codes} codes per head), k-means only "
            f"({attn_init_s:.0f} s)", attn_eval, f"{attn_dead:.2f}"),
        row(f"+ MLP-output codebooks ({args.n_codes} codes), k-means init ({init_s:.0f} s)", km),
        row(f"+ MLP-output codebooks, trained {args.steps} steps of {args.batch} x {WINDOW} tokens "
            f"({res.seconds:.0f} s; {step:.2f} s per step = {step / plain_step:.2f}x a plain training step of the "
            f"base model, {plain_step:.2f} s)", trained, f"{dead:.2f}"),
    ]
    # (a) keyword codes: the best code per topic for the tokens of its keywords (held-out), vs the best neuron
    tok = model.tokenizer
    names = ev.topic_names
    codes_ev = codebook.collect_codes(model, ev_tokens, batch_size=32)
    kw = keyword_labels(tok, ev_tokens, names)
    search = codebook.search_by_labels(model, ev_tokens, kw, codes=codes_ev,
                                       neuron_sites=[f"blocks.{L}.mlp.hook_post" for L in args.cb_layers])
    code_rows = [{"topic": names[mt.label], "keyword tokens": mt.n_positions,
                  "best code": f"{mt.site.split('.')[1]}/{mt.code}",
                  "code P / R": f"{mt.precision:.2f} / {mt.recall:.2f}",
                  "best MLP neuron, same recall: P": f"{mt.neuron_precision:.2f}"} for mt in search.matches]
    summ = search.summary()
    code_rows.append({"topic": "mean", "code P / R": f"{summ['average_precision']:.2f} / {summ['average_recall']:.2f}",
                      "best MLP neuron, same recall: P": f"{summ['neuron_average_precision']:.2f}"})
    log(f"keyword codes: {summ}", t0)
    # (b) the codes forced for steering, ranked by rank_codes over the training texts (CODE_SEARCH), and their
    # held-out precision: the share of their firings on held-out positions of the same kind (keyword tokens of the
    # topic, or continuation positions of the topic's texts)
    codes_tr = codebook.collect_codes(model, xt, batch_size=32)
    cont_tr = torch.arange(WINDOW)[None, :] >= torch.tensor(train.prompt_lengths)[:, None]
    cont_ev = torch.arange(WINDOW)[None, :] >= torch.tensor(ev.prompt_lengths[: len(ev_tokens)])[:, None]
    _, yt = train.windows(WINDOW)
    ye = ev.windows(WINDOW)[1][: len(ev_tokens)]
    kw_tr = keyword_labels(tok, xt, names) if args.topic_codes == "keyword" else None
    topic_codes = {}
    for i, topic in enumerate(names):
        if args.topic_codes == "keyword":
            ranked = codebook.rank_codes(model, xt, kw_tr, i, codes=codes_tr, n=args.force, min_hits=3,
                                         min_precision=0.3, min_recall=0.05)
            mask_ev, lab_ev = torch.ones_like(kw, dtype=torch.bool), kw
        else:
            ranked = codebook.rank_codes(model, xt, yt, i, mask=cont_tr, codes=codes_tr, n=args.force, min_hits=10)
            mask_ev, lab_ev = cont_ev, ye
        topic_codes[topic] = ranked
        hit = fired = 0
        for st in ranked:
            on = (codes_ev[st.site][..., st.group, :] == st.code).any(-1).cpu() & mask_ev
            fired += int(on.sum())
            hit += int((on & (lab_ev == i)).sum())
        for row in code_rows:
            if row["topic"] == topic:
                row["codes forced"] = len(ranked)
                row["their train P"] = f"{sum(st.precision for st in ranked) / max(1, len(ranked)):.2f}"
                row["held-out P"] = f"{hit / fired:.2f}" if fired else "n/a"
    if args.save:
        codebook.save_codebooks(cbs, args.save)
        Path(args.save, "topic_codes.json").write_text(json.dumps(
            {tp: [[st.site, st.group, st.code] for st in r] for tp, r in topic_codes.items()}))
    prompts = list(NEUTRAL_PROMPTS[: args.steer_prompts])
    t = time.perf_counter()
    steer_codes = {tp: r for tp, r in topic_codes.items() if r}
    steer = codebook.topic_steering(model, steer_codes, prompts, on_topic, n_samples=args.steer_samples,
                                    n_new=args.new_tokens, mode="append", repeat=args.repeat, seed=0)
    steer_s = time.perf_counter() - t
    log(f"code steering {steer_s:.0f} s: {steer.mean_steered:.3f} vs {steer.mean_baseline:.3f}, perplexity "
        f"{steer.mean_steered_perplexity:.1f} vs {steer.baseline_perplexity:.1f}", t0)
    codebook.detach(model)
    # the activation-addition baseline on the model without codebooks: a topic's mean residual difference
    # (continuation positions of its training texts vs the other topics') added at one layer
    add_site = f"blocks.{args.add_layer}.hook_resid_post"
    diffs = codebook.mean_differences(model, xt, yt, range(len(names)), add_site, mask=cont_tr)
    vectors = {tp: diffs[i] for i, tp in enumerate(names)}
    adds = {}
    for scale in args.add_scales:
        adds[scale] = codebook.addition_steering(model, vectors, prompts, on_topic, site=add_site, scale=scale,
                                                 n_samples=args.steer_samples, n_new=args.new_tokens, seed=0)
        log(f"activation addition x{scale:g}: {adds[scale].mean_steered:.3f} vs {adds[scale].mean_baseline:.3f}, "
            f"perplexity {adds[scale].mean_steered_perplexity:.1f}", t0)
    fair = [sc for sc, r in adds.items() if r.mean_steered_perplexity <= 2 * r.baseline_perplexity]
    best = max(fair or adds, key=lambda sc: adds[sc].mean_steered)
    add = adds[best]
    steer_rows = [{"topic": tp, "baseline": f"{steer.baseline[tp]:.0%}" if tp in steer.baseline else "",
                   "codes forced": f"{steer.steered[tp]:.0%}" if tp in steer.steered else "no codes",
                   "perplexity (codes)": f"{steer.steered_perplexity[tp]:.1f}" if tp in steer.steered else "",
                   "baseline, no codebooks": f"{add.baseline[tp]:.0%}",
                   f"activation addition x{best:g}": f"{add.steered[tp]:.0%}",
                   "perplexity (addition)": f"{add.steered_perplexity[tp]:.1f}",
                   "example (codes forced)": (steer.examples.get(tp) or [""])[0][:80].replace("\n", " ").replace("|", "/")}
                  for tp in names]
    steer_rows.append({"topic": "mean", "baseline": f"{steer.mean_baseline:.1%}", "codes forced": f"{steer.mean_steered:.1%}",
                       "perplexity (codes)": f"{steer.mean_steered_perplexity:.1f} (unsteered {steer.baseline_perplexity:.1f})",
                       "baseline, no codebooks": f"{add.mean_baseline:.1%}",
                       f"activation addition x{best:g}": f"{add.mean_steered:.1%}",
                       "perplexity (addition)": f"{add.mean_steered_perplexity:.1f} (unsteered {add.baseline_perplexity:.1f})"})
    scale_rows = [{"scale": f"{sc:g}", "mean on-topic": f"{r.mean_steered:.1%}",
                   "mean perplexity": f"{r.mean_steered_perplexity:.1f}",
                   "within 2x the unsteered perplexity": str(r.mean_steered_perplexity <= 2 * r.baseline_perplexity)}
                  for sc, r in adds.items()]
    notes = [f"codebooks: {sites}, {args.n_codes} codes each, k=1, cosine, commitment 0.25, dead codes re-seeded "
             f"every 10 steps; dead share on held-out text {dead:.2f}; k-means on {init_texts.numel()} tokens of "
             f"{len(init_texts)} training texts, then trained on all {len(xt)}; held-out: {ev_tokens.numel()} tokens of {len(ev_tokens)} texts whose "
             "openings are not in training",
             f"steering: {args.topic_codes} codes, the top {args.force} per topic by rank_codes ({CODE_SEARCH[args.topic_codes]}) "
             f"appended {args.repeat}x at every position; {len(prompts)} neutral prompts x {args.steer_samples} samples "
             f"x {args.new_tokens} new tokens per topic (temperature 0.8, top-p 0.95, KV cache, the same seeds for "
             "every method); on-topic: keyword classifier (probe.data.lmtext.on_topic) on the continuation; perplexity: "
             f"of the continuations given the prompt under the unmodified model; {steer_s:.0f} s",
             f"activation addition: per topic, the mean of blocks.{args.add_layer}.hook_resid_post over the continuation "
             "positions of the topic's training texts minus the mean over the other topics' texts, times the scale, "
             f"added at every position (model without codebooks); scales tried {args.add_scales}, the best within 2x "
             f"the unsteered perplexity is shown: x{best:g}",
             f"baseline continuations (codebooks attached, nothing forced): {steer.baseline_examples[:2]!r}"]
    return loss_rows, code_rows, steer_rows, scale_rows, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["load", "corpus", "moe", "codebook"],
                    choices=["load", "corpus", "moe", "codebook"])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                    help="sizes: 'cpu' (minutes on 2 cores) or 'gpu' (every layer, large codebooks; the flags below "
                    "override single sizes)")
    ap.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1, ...")
    ap.add_argument("--samples", type=int, help="continuations per corpus opening")
    ap.add_argument("--moe-layers", type=int, nargs="+")
    ap.add_argument("--cb-layers", type=int, nargs="+")
    ap.add_argument("--n-codes", type=int)
    ap.add_argument("--attn-codes", type=int, help="codes per head of the attention codebooks")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--init-texts", type=int, help="training texts the k-means runs on")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--eval-texts", type=int)
    ap.add_argument("--force", type=int, default=16, help="codes forced per topic")
    ap.add_argument("--repeat", type=int, default=1, help="times each forced code is appended")
    ap.add_argument("--steer-prompts", type=int, default=4, help="neutral prompts (the first N)")
    ap.add_argument("--steer-samples", type=int, default=10, help="continuations per prompt and topic")
    ap.add_argument("--topic-codes", choices=sorted(CODE_SEARCH), default="text",
                    help="how the forced codes are found (see CODE_SEARCH)")
    ap.add_argument("--add-layer", type=int, default=6, help="activation addition: the residual stream after this block")
    ap.add_argument("--add-scales", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--save", default="", help="folder for the trained codebooks and the topic codes")
    args = ap.parse_args()
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    device = device_label(args.device, ap)  # checked before anything loads
    t0 = time.perf_counter()
    model = zoo.load("smollm2-135m", device=args.device)
    log(f"model loaded on {device}", t0)
    tables, notes = [], []
    if "load" in args.parts:
        rows, n = part_load(model, t0, args.device)
        tables.append({"caption": f"Loading and generation ({device})", "columns": ["figure", "value"],
                       "rows": rows})
        notes += n
    t = time.perf_counter()
    corpus = build_corpus(model, n_samples=args.samples, max_new_tokens=40, batch_size=16 if args.device == "cpu" else 128)
    corpus_s = time.perf_counter() - t
    train, ev = corpus.split(0.25)
    if "corpus" in args.parts:
        notes.append(f"corpus: {len(corpus)} model-written texts ({len(train)} train / {len(ev)} held-out by "
                     f"opening), 8 topics; sampled in {corpus.settings['seconds']:.0f} s once, read from the cache "
                     f"in {corpus_s:.1f} s; keyword classifier agrees with the opening's topic on "
                     f"{corpus.agreement():.1%} of continuations")
    if "moe" in args.parts:
        rows, task_rows, n = part_moe(model, train, ev, args.moe_layers, t0)
        tables.append({"caption": "Emergent experts in the gated SiLU MLPs: coverage at the top 25% of experts "
                                  "(gain over random, points)",
                       "columns": list(rows[0]), "rows": rows})
        tables.append({"caption": "Next-token accuracy with only some experts active in those layers at once "
                                  "(avg_k router)", "columns": list(task_rows[0]), "rows": task_rows})
        notes += n
    if "codebook" in args.parts:
        loss_rows, code_rows, steer_rows, scale_rows, n = part_codebook(model, train, ev, args, t0)
        tables.append({"caption": "Codebooks on MLP outputs: held-out next-token loss", "columns": list(loss_rows[0]),
                       "rows": loss_rows})
        tables.append({"caption": "Codes for each topic's keyword tokens (held-out; best code by F1 vs the best MLP "
                                  "neuron of the same layers at the same recall) and the topic codes used for "
                                  "steering", "columns": list(code_rows[0]), "rows": code_rows})
        tables.append({"caption": "Topic steering: share of continuations on the topic, and their perplexity under "
                                  "the unmodified model", "columns": list(steer_rows[0]), "rows": steer_rows})
        tables.append({"caption": f"Activation addition at blocks.{args.add_layer}: the scales tried",
                       "columns": list(scale_rows[0]), "rows": scale_rows})
        notes += n
    total = time.perf_counter() - t0
    notes.append(f"whole run {total / 60:.1f} min on {device} (parts {args.parts}, preset {args.preset})")
    log("done", t0)
    if not args.no_write:
        name = "lm_smollm2" if args.preset == "cpu" and args.device == "cpu" else f"lm_smollm2_{args.preset}"
        where = "a CPU" if args.device == "cpu" else device
        path = write_result(name, "python benchmarks/lm_smollm2.py " + " ".join(sys.argv[1:]), {
            "title": f"Real language model on {where}: SmolLM2-135M-Instruct (offline)", "notes": notes,
            "tables": tables, "settings": vars(args), "seconds": round(total, 1)})
        log(f"wrote {path}", t0)


if __name__ == "__main__":
    main()
