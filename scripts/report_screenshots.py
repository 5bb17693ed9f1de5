"""Build one HTML report of each kind from real, small results and screenshot it with headless Chromium into
``docs/images/report-<kind>.png`` (the pictures in README's "Reports" section).

The results (CPU, a few minutes in all):

* ``nap``: NAPs of the VNN-COMP network mnist-256x2 mined on 2,000 MNIST training images, with coverage and
  precision on 2,000 test images at four deltas;
* ``complexity`` / ``complexity-sweep``: feature complexity of the same network at beta=0.1, and a sweep;
* ``moe``: emergent experts of the reference mnist-mlp on 2,048 training images;
* ``verify-batch``: 3 mnistfc instances run with ``neurospec verify-batch``, the counterexamples of the sat
  ones written by ``neurospec verify --out``; ``verification-result``: one of them verified in Python;
* ``codebook-search`` / ``codebook-steering``: codebooks trained briefly in the pretrained TokFSM (GELU)
  transformer, a search for the codes of FSM states (with top contexts) and state steering.

Needs Debian's ``chromium`` and ``chromium-driver`` and the data root (``../shared/data``)::

    .venv/bin/python scripts/report_screenshots.py                  # all kinds
    .venv/bin/python scripts/report_screenshots.py --kinds nap moe --html-dir /tmp/reports
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
INSTANCES = [("mnist-net_256x2.onnx", "prop_2_0.03.vnnlib"), ("mnist-net_256x2.onnx", "prop_7_0.03.vnnlib"),
             ("mnist-net_256x2.onnx", "prop_1_0.05.vnnlib")]


def _mnist(split: str, n: int, batch_size: int = 500):
    from probe import data

    return data.make_loader(data.load_mnist(split).subset(n), batch_size=batch_size)


def build_nap(out: Path) -> Path:
    from probe import nap
    from probe.zoo import load_vnncomp

    net = load_vnncomp("mnist-256x2")
    naps = nap.mine(net, _mnist("train", 2000), delta=0.99, verbose=False,
                    class_names=[str(c) for c in range(10)])
    naps.source = {"onnx": "mnist-net_256x2.onnx", "data": "mnist train, 2,000 images"}
    stats = naps.sweep(net, _mnist("test", 2000), [1.0, 0.99, 0.95, 0.9], verbose=False)
    return naps.to_html(out / "nap.html", stats=stats, title="NAPs of mnist-256x2")


def build_complexity(out: Path) -> Path:
    from probe import complexity
    from probe.zoo import load_vnncomp

    report = complexity.measure(load_vnncomp("mnist-256x2"), beta=0.1)
    return report.to_html(out / "complexity.html", title="Feature complexity of mnist-256x2")


def build_complexity_sweep(out: Path) -> Path:
    from probe import complexity
    from probe.zoo import load_vnncomp

    result = complexity.sweep(load_vnncomp("mnist-256x2"), [0.05, 0.1, 0.2, 0.3, 0.4], _mnist("test", 2000))
    return result.to_html(out / "sweep.html", title="Feature complexity sweep of mnist-256x2")


def build_moe(out: Path) -> Path:
    from probe import moe
    from probe.report import moe_report_html
    from probe.zoo import train_reference

    model = train_reference("mnist-mlp", verbose=False)
    report = moe.detect(model, _mnist("train", 2048, 512), n_experts=16, method=["activations", "weights"],
                        eval_loader=_mnist("test", 2000, 1000), fractions=(0.125, 0.25, 0.5),
                        routers=("avg_k", "oracle"), n_random=3, verbose=False)
    return moe_report_html(report, out / "moe.html", title="Emergent experts of mnist-mlp")


def _mnistfc() -> Path:
    from probe.core.paths import data_root

    return data_root() / "vnncomp2021" / "mnistfc"


def build_verify_batch(out: Path) -> Path:
    from verify.report import batch_html

    folder = _mnistfc()
    instances = out / "instances.csv"
    instances.write_text("".join(f"{o},{v},60\n" for o, v in INSTANCES))
    results = out / "results.csv"
    results.unlink(missing_ok=True)
    cli = [sys.executable, "-m", "probe.cli"]
    subprocess.run([*cli, "verify-batch", str(instances), "--root", str(folder), "--out", str(results), "--quiet"],
                   check=True)
    import csv

    cex = {}
    with results.open() as fh:
        for row in csv.DictReader(fh):
            if row["result"] == "sat":  # the CSV holds no counterexample: write the VNN-COMP result file
                text = out / f"{Path(row['vnnlib']).stem}.txt"
                subprocess.run([*cli, "verify", "--onnx", str(folder / row["onnx"]), "--vnnlib",
                                str(folder / row["vnnlib"]), "--timeout", "60", "--out", str(text)], check=True)
                cex[(row["onnx"], row["vnnlib"])] = text
    return batch_html(results, out / "batch.html", root=folder, counterexamples=cex,
                      title="verify-batch: 3 mnistfc instances")


def build_verification_result(out: Path) -> Path:
    import numpy as np

    import verify
    from verify.network import ReluNetwork
    from verify.report import result_html
    from verify.vnnlib import read_vnnlib

    folder = _mnistfc()
    onnx, prop = INSTANCES[1]
    net = ReluNetwork.from_onnx(folder / onnx)
    spec = read_vnnlib(folder / prop, n_inputs=net.n_inputs, n_outputs=net.n_outputs)
    result = verify.verify(net, spec, timeout=60)
    centre = (np.asarray(spec.lower) + np.asarray(spec.upper)) / 2
    return result_html(result, out / "result.html", original=centre, title=f"Verification: {onnx} · {prop}")


def _tokfsm_with_codebooks():
    import codebook
    from probe.data.tokfsm import TokFSM
    from probe.zoo.tokfsm import lm_loss, pretrained

    torch.manual_seed(0)
    fsm = TokFSM()
    model = pretrained("gelu", verbose=False)
    cbs = codebook.attach(model, codebook.site_names(model, ["attn_z", "mlp_out"]),
                          codebook.CodebookConfig(n_codes=256, k=1, commitment=0.25, dead_code_every=20))
    codebook.init_codebooks(model, cbs, [fsm.sample(64, seed=7)[:, :-1]])
    codebook.train(model, cbs, lambda step: fsm.sample(16, seed=1000 + step)[:, :-1],
                   codebook.TrainConfig(steps=40, lr_codebook=1e-3, freeze_model=True, check_every=10),
                   loss_fn=lm_loss, verbose=False)
    return model, fsm


_CACHE: dict[str, object] = {}


def _codebook_model():
    if "model" not in _CACHE:
        _CACHE["model"], _CACHE["fsm"] = _tokfsm_with_codebooks()
    return _CACHE["model"], _CACHE["fsm"]


def build_codebook_search(out: Path) -> Path:
    import codebook

    model, fsm = _codebook_model()
    tokens = fsm.sample(64, seed=5)[:, :-1]
    digit = fsm.digit_index(tokens)
    labels = torch.where(digit == 1, fsm.state_ids(tokens), torch.full_like(tokens, -1))
    res = codebook.search_by_labels(model, tokens, labels, mask=digit >= 0, contexts=5, context_window=8,
                                    decode=lambda t: "BOS" if t == 10 else str(t))
    return res.to_html(out / "search.html", class_names=[f"state {s}" for s in range(100)],
                       title="Codebook features: codes of TokFSM states")


def build_codebook_steering(out: Path) -> Path:
    import codebook

    model, fsm = _codebook_model()
    res = codebook.fsm_state_steering(model, fsm, n_pairs=40, n_samples=5, n_examples=12)
    return res.to_html(out / "steering.html", title="Codebook features: FSM state steering (TokFSM, GELU)")


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "nap": build_nap, "complexity": build_complexity, "complexity-sweep": build_complexity_sweep,
    "moe": build_moe, "verify-batch": build_verify_batch, "verification-result": build_verification_result,
    "codebook-search": build_codebook_search, "codebook-steering": build_codebook_steering,
}


#: Kinds that get a second picture, of the section with this id (``report-<kind>-<id>.png``).
SECTIONS = {"codebook-search": "top-contexts"}


def screenshot(pages: dict[str, Path], folder: Path, width: int = 1280, max_height: int = 1500) -> list[Path]:
    """Open each page from disk in headless Chromium and save ``report-<kind>.png`` (the top of the page,
    at most ``max_height`` pixels; for :data:`SECTIONS` also one of that section). Fails on a console error
    or an image that does not decode."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='neurospec-chromium-')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for kind, page in pages.items():
            driver.set_window_size(width, 900)
            driver.get(page.resolve().as_uri())
            bad = driver.execute_script("return Array.from(document.images).filter(i => !i.naturalWidth).length")
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            if bad or errors:
                raise RuntimeError(f"{page}: {bad} image(s) did not decode; console errors {errors}")
            height = int(driver.execute_script("return document.documentElement.scrollHeight"))
            driver.set_window_size(width, min(height, max_height))
            path = folder / f"report-{kind}.png"
            driver.save_screenshot(str(path))
            written.append(path)
            if kind in SECTIONS:
                driver.set_window_size(width, 900)
                driver.execute_script("document.getElementById(arguments[0]).scrollIntoView();", SECTIONS[kind])
                path = folder / f"report-{kind}-{SECTIONS[kind]}.png"
                driver.save_screenshot(str(path))
                written.append(path)
    finally:
        driver.quit()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", choices=list(BUILDERS), default=list(BUILDERS))
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "images", help="where the PNGs go")
    parser.add_argument("--html-dir", type=Path, default=None, help="keep the HTML reports here (default: a tmp dir)")
    args = parser.parse_args()
    html_dir = args.html_dir or Path(tempfile.mkdtemp(prefix="neurospec-reports-"))
    html_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    pages = {}
    for kind in args.kinds:
        t0 = time.perf_counter()
        pages[kind] = BUILDERS[kind](html_dir)
        print(f"{kind:20s} {time.perf_counter() - t0:7.1f} s  {pages[kind]}")
    for path in screenshot(pages, args.out_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
