"""Every kind of HTML report opened from disk in a real browser: headless Chromium driven by chromedriver
(Debian's ``chromium`` and ``chromium-driver``; ``.ci/run`` installs them).

All reports are built once from tiny in-process results and opened in one shared browser session. Per kind:
no console error, every ``<img>`` decodes, the main table has the expected number of rows, and a screenshot
is saved (under ``tmp_path`` and, when ``$NEUROSPEC_ARTIFACTS`` is set, there). One more session with
JavaScript off checks that a long, paged table is still all there.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import mlp, tiny_model

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1280,900"]
N_BATCH = 150  # rows of the verify-batch CSV: more than a page (100), so JavaScript pages it
KINDS = ["nap", "complexity", "complexity-sweep", "moe", "verify-batch", "verification_result",
         "codebook-search", "codebook-steering"]


def _driver(profile: Path, javascript: bool = True):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"{missing} missing: install Debian's chromium and chromium-driver (as .ci/run does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    if not javascript:
        opts.add_argument("--blink-settings=scriptEnabled=false")
        opts.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    profile = Path(tempfile.mkdtemp(prefix="neurospec-chromium-"))
    driver = _driver(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _vnnlib(path: Path, centre: np.ndarray, eps: float) -> None:
    lines = [f"(declare-const X_{i} Real)" for i in range(centre.size)]
    lines += ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    for i, v in enumerate(centre):
        lines += [f"(assert (>= X_{i} {float(v - eps)!r}))", f"(assert (<= X_{i} {float(v + eps)!r}))"]
    path.write_text("\n".join([*lines, "(assert (>= Y_1 Y_0))"]) + "\n")


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    """Every kind of report from tiny in-process results: kind -> (HTML file, rows of its main table)."""
    from codebook import fsm_state_steering, search_by_labels
    from probe import complexity, moe, nap
    from probe.data.tokfsm import TokFSM
    from probe.report import moe_report_html
    from verify.report import batch_html, result_html
    from verify.result import Counterexample, VerificationResult

    out = tmp_path_factory.mktemp("reports")
    torch.manual_seed(0)
    net = mlp([4, 8, 8, 3], seed=0)
    x = torch.randn(300, 4)
    y = net(x).argmax(1)
    built: dict[str, tuple[Path, int]] = {}

    naps = nap.mine(net, [(x, y)], delta=0.99, verbose=False)
    built["nap"] = (naps.to_html(out / "nap.html", stats=naps.sweep(net, [(x, y)], [1.0, 0.99, 0.9],
                                                                     verbose=False)), naps.num_classes)
    rep = complexity.measure(net, beta=0.5)
    built["complexity"] = (rep.to_html(out / "complexity.html"), len(rep.groups))
    built["complexity-sweep"] = (complexity.sweep(net, [0.1, 0.3, 0.6], [(x, y)]).to_html(out / "sweep.html"), 3)
    wide = mlp([4, 16, 3], seed=1)
    mrep = moe.detect(wide, [(x, wide(x).argmax(1))], n_experts=4, method=["weights", "activations"],
                      n_random=2, verbose=False)
    built["moe"] = (moe_report_html(mrep, out / "moe.html"), 2)

    rng = np.random.default_rng(0)
    original = rng.random(64) * 0.8 + 0.1  # an 8x8 "image"
    cex = original + rng.uniform(-0.05, 0.05, 64)
    _vnnlib(out / "prop.vnnlib", original, 0.05)
    statuses = ["unsat", "sat", "timeout", "unknown", "error"]
    rows = [{"onnx": f"net{i % 2}.onnx", "vnnlib": "prop.vnnlib" if i % 5 == 1 else f"p{i}.vnnlib",
             "timeout": "60", "result": statuses[i % 5], "seconds": f"{rng.random() * 60:.3f}", "method": "bounds",
             "solver": "cbc", "message": "<b>not bold</b>" if i % 5 == 4 else ""} for i in range(N_BATCH)]
    with (out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    built["verify-batch"] = (batch_html(out / "results.csv", out / "batch.html",
                                        counterexamples={("net1.onnx", "prop.vnnlib"): cex}), N_BATCH)
    res = VerificationResult("falsified", method="attack", solver="cbc", timings={"build": 0.1, "attack": 0.2,
                                                                                    "total": 0.3, "load": 0.05},
                             counterexample=Counterexample(x=cex, y=np.array([0.1, 0.9]), y_source=np.array([0.1, 0.9])))
    built["verification_result"] = (result_html(res, out / "result.html", original=original), 4)

    fsm = TokFSM()
    model = tiny_model(n_codes=6)
    tokens = fsm.sample(6, seed=1)[:, :21]
    labels = (tokens % 3).where(tokens != 10, torch.full_like(tokens, -1))
    search = search_by_labels(model, tokens, labels, contexts=3, decode=lambda t: "BOS" if t == 10 else str(t))
    assert all(m.contexts and m.usage > 0 for m in search.matches)
    built["codebook-search"] = (search.to_html(out / "search.html"), len(search.matches))
    steer = fsm_state_steering(model, fsm, n_pairs=4, n_samples=2, prompt_states=3, n_examples=3)
    assert len(steer.examples) == 3
    built["codebook-steering"] = (steer.to_html(out / "steering.html"), 3)
    return built


def _screenshot(driver, kind: str, folder: Path) -> Path:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 20, 4000))
    path = folder / f"report-{kind}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)
    if os.environ.get("NEUROSPEC_ARTIFACTS"):
        dest = Path(os.environ["NEUROSPEC_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest / path.name)
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_report_in_browser(kind, reports, browser, tmp_path):
    html, n_rows = reports[kind]
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(html.resolve().as_uri())
    assert browser.title
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]);")
    assert images, "every report has at least one figure"
    assert all(done and width > 0 for done, width, _ in images), images
    rows = browser.execute_script("return document.querySelectorAll('table[data-main] tbody tr').length;")
    assert rows == n_rows
    visible = browser.execute_script(
        "return Array.from(document.querySelectorAll('table[data-main] tbody tr')).filter(r => !r.hidden).length;")
    assert visible == min(n_rows, 100)  # the script pages long tables
    tools_shown = browser.execute_script(
        "var t = document.querySelector('.table-tools[data-for=main-table]'); return t ? !t.hidden : null;")
    assert tools_shown in (True, None)
    if kind == "verify-batch":  # counterexamples beside their originals; the filter box filters
        from selenium.webdriver.common.by import By

        groups = browser.execute_script(
            "return Array.from(document.querySelectorAll('#counterexamples .group')).map(g => g.querySelectorAll('img').length);")
        assert len(groups) == 24 and set(groups) == {1, 3}  # net0's are not given: original only
        assert "Showing the first 24 of 30 falsified instances" in browser.page_source
        assert "cannot read" not in browser.page_source

        browser.find_element(By.CSS_SELECTOR, ".table-tools[data-for=main-table] input").send_keys("net1.onnx")
        shown = browser.execute_script(
            "return Array.from(document.querySelectorAll('#main-table tbody tr')).filter(r => !r.hidden).length;")
        assert shown == N_BATCH // 2
        assert browser.find_elements(By.CSS_SELECTOR, "#main-table b") == []  # escaped, not markup
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    assert _screenshot(browser, kind, tmp_path).stat().st_size > 10_000


def test_tables_are_complete_with_javascript_off(reports, tmp_path):
    from selenium.webdriver.common.by import By

    driver = _driver(tmp_path / "profile", javascript=False)
    try:
        html, n_rows = reports["verify-batch"]
        driver.get(html.resolve().as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "table[data-main] tbody tr")
        assert len(rows) == n_rows
        assert rows[-1].is_displayed() and rows[0].is_displayed()  # no paging without the script
        assert not driver.find_element(By.CSS_SELECTOR, ".table-tools[data-for=main-table]").is_displayed()
        assert str(n_rows) in rows[-1].text
        _screenshot(driver, "verify-batch-no-js", tmp_path)
    finally:
        driver.quit()
