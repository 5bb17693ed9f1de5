"""probe.report without a browser: escaping, self-containment, capping of long tables, bad inputs, and
``neurospec report``'s detection of the kind (and its typed errors). The pages in a real browser:
tests/integration/test_reports_browser.py."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from helpers import mlp

from probe import nap
from probe.cli import main
from probe.cli.report import write_report
from probe.core.errors import CorruptDataError, DataNotFoundError, InvalidParameterError, OutputPathError
from probe.report import (
    KINDS,
    Section,
    badge,
    details,
    detect_kind,
    facts,
    figure,
    image,
    image_grid,
    image_shape,
    marked_tokens,
    nap_page,
    paragraph,
    render_page,
    table,
    write_html,
)

EVIL = '<script>alert("x")</script>'


def _naps():
    net = mlp([4, 8, 3], seed=0)
    x = torch.randn(120, 4)
    return nap.mine(net, [(x, net(x).argmax(1))], delta=0.99, verbose=False)


def test_every_value_is_escaped():
    page = render_page(EVIL, [
        (EVIL, [paragraph(EVIL), facts({EVIL: EVIL}), badge(EVIL, "bad"), marked_tokens([EVIL, "b"], 0),
                table([{EVIL: EVIL, "n": 1}], caption=EVIL), details(EVIL, [EVIL]),
                image_grid([(EVIL, [paragraph(EVIL)])]), EVIL]),
    ], subtitle=EVIL)
    assert EVIL not in page
    assert page.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") >= 12
    assert page.count("<script>") == 1  # the page's own script only


def test_page_is_self_contained():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    page = render_page("T", [("S", [figure(fig, "a line"), image(np.random.default_rng(0).random((3, 8, 8)), "rgb")])])
    assert 'http-equiv="Content-Security-Policy"' in page and "default-src 'none'" in page
    srcs = re.findall(r'(?:src|href)="([^"#][^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page
    assert fig.number not in plt.get_fignums()  # figure() closed it


def test_long_tables_are_capped_and_say_so():
    rows = [{"i": i, "x": i / 7} for i in range(12_345)]
    html = table(rows, main=True)
    assert "Showing the first 500 of 12,345 rows" in html
    assert html.count("<tr>") == 501  # header + 500
    assert 'data-page-size="100"' in html  # the script pages what is rendered
    full = table(rows[:150], max_rows=None, page_size=None)
    assert "Showing" not in full and full.count("<tr>") == 151 and "data-page-size" not in full
    assert 'hidden' in table(rows[:3])  # the filter box is hidden until the script shows it
    assert "table-tools" not in table(rows[:1], searchable=True)  # nothing to filter in one row


def test_cells_are_formatted():
    html = table([{"f": 0.123456, "nan": float("nan"), "big": 12_345, "lst": [1, 2], "none": None,
                   "np": np.float32(0.5)}])
    assert ">0.1235<" in html and ">-<" in html and ">12,345<" in html and ">1, 2<" in html and ">0.5000<" in html


def test_rendering_is_deterministic_without_timestamp():
    def page() -> str:
        return render_page("T", [("A", table([{"a": 1}, {"a": 2}])), ("A", "again")], timestamp=False)

    assert page() == page()
    assert 'id="a"' in page() and 'id="a-2"' in page()  # repeated section titles get distinct anchors


def test_images_and_shapes():
    assert image_shape(784) == (28, 28) and image_shape(3072) == (3, 32, 32) and image_shape(10) is None
    html = image(np.zeros(784), "mnist", shape=(28, 28), caption="zeros")
    assert html.count("<img") == 1 and "zeros" in html and 'class="pixel"' in html
    assert "<img" in image(np.ones((32, 32, 3)), "hwc") and "<img" in image(np.ones((1, 8, 8)), "chw")


@pytest.mark.parametrize("call", [
    lambda: render_page("", [("S", "x")]),
    lambda: render_page("T", "not sections"),
    lambda: render_page("T", [("S", 42)]),
    lambda: render_page("T", [("S", "x", "extra")]),
    lambda: Section("", ["x"]),
    lambda: table([1, 2]),
    lambda: table({"a": 1}),
    lambda: table([{"a": 1}], max_rows=0),
    lambda: table([{"a": 1}], page_size=-5),
    lambda: facts([("a", 1)]),
    lambda: badge("x", "purple"),
    lambda: figure("not a figure", "alt"),
    lambda: image(np.zeros((2, 2, 2, 2)), "4-d"),
    lambda: image(np.full((4, 4), np.nan), "nan"),
    lambda: image(np.zeros(10), "bad shape", shape=(3, 3)),
    lambda: image(np.zeros((4, 4)), "bad scale", scale=0),
    lambda: image_grid([("only a title",)]),
    lambda: nap_page("not naps"),
])
def test_bad_inputs_raise_invalid_parameter(call):
    with pytest.raises(InvalidParameterError):
        call()


def test_write_html(tmp_path):
    page = render_page("T", [("S", "x")])
    out = write_html(tmp_path / "sub" / "r.html", page)
    assert out.read_text() == page
    with pytest.raises(OutputPathError):
        write_html(tmp_path, page)  # a folder
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputPathError):
        write_html(tmp_path / "file" / "r.html", page)  # below a file
    with pytest.raises(InvalidParameterError):
        write_html(tmp_path / "b.html", page.encode())


# ------------------------------------------------------------------------------- neurospec report


def test_detect_kind_of_every_stamp_style(tmp_path):
    naps = _naps()
    naps.save(tmp_path / "naps.json")
    assert detect_kind(tmp_path / "naps.json") == ("nap", tmp_path / "naps.json")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**naps.to_dict(), "format": "neurospec.nap/1"}))
    assert detect_kind(old)[0] == "nap"
    cb = tmp_path / "cb.json"
    cb.write_text(json.dumps({"kind": "codebook-steering", "success_rate": 0.5}))
    assert detect_kind(cb)[0] == "codebook-steering"
    folder = tmp_path / "moe"
    folder.mkdir()
    (folder / "moe_report.json").write_text(json.dumps({"format": "neurospec.moe/1"}))
    assert detect_kind(folder) == ("moe", folder / "moe_report.json")
    csv_file = tmp_path / "results.csv"
    csv_file.write_text("onnx,vnnlib,timeout,result,seconds,method,solver,message\n")
    assert detect_kind(csv_file)[0] == "verify-batch"


@pytest.mark.parametrize("content,match", [
    ('{"format": "neurospec.codebooks", "neurospec_format_version": 1}', "'codebooks' file .* has no report"),
    ('{"answer": 42}', "no neurospec format stamp"),
    ("[1, 2]", "no object"),
    ("{not json", "not valid JSON"),
    ("a,b,c\n1,2,3\n", "neither a JSON result nor a results CSV"),
])
def test_unknown_kinds_name_the_file_and_the_kinds(tmp_path, content, match):
    path = tmp_path / "thing.json"
    path.write_text(content)
    with pytest.raises(CorruptDataError, match=match) as err:
        detect_kind(path)
    assert "thing.json" in str(err.value) and all(k in str(err.value) for k in KINDS)


def test_newer_format_versions_are_refused(tmp_path):
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"format": "neurospec.nap", "neurospec_format_version": 99}))
    with pytest.raises(CorruptDataError, match="newer"):
        detect_kind(new)
    new.write_text(json.dumps({"format": "neurospec.complexity/7"}))
    with pytest.raises(CorruptDataError, match="newer"):
        detect_kind(new)


def test_missing_inputs_and_folders(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        detect_kind(tmp_path / "nope.json")
    with pytest.raises(CorruptDataError, match=r"report\.json"):
        detect_kind(tmp_path)  # a folder without a result


def test_report_command_writes_and_fails_with_typed_errors(tmp_path, capsys):
    naps = _naps()
    naps.save(tmp_path / "naps.json")
    assert main(["report", str(tmp_path / "naps.json"), "--out", str(tmp_path / "naps.html")]) == 0
    assert "Neural activation patterns" in (tmp_path / "naps.html").read_text()
    assert "nap report" in capsys.readouterr().out
    # the output is checked before the input is read
    with pytest.raises(OutputPathError):
        write_report(tmp_path / "missing.json", tmp_path)
    with pytest.raises(DataNotFoundError):
        write_report(tmp_path / "missing.json", tmp_path / "x.html")
    assert main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x.html")]) == 1
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_report_command_renders_a_results_csv_and_a_complexity_folder(tmp_path):
    from probe import complexity

    csv_file = tmp_path / "results.csv"
    csv_file.write_text("onnx,vnnlib,timeout,result,seconds,method,solver,message\n"
                        "net.onnx,p.vnnlib,60,unsat,1.5,bounds,cbc,\nnet.onnx,q.vnnlib,60,sat,0.5,attack,cbc,\n")
    kind, out = write_report(csv_file, tmp_path / "batch.html")
    html = out.read_text()
    assert kind == "verify-batch" and html.count("<tr>") >= 3 and "counterexample not available" in html
    rep = complexity.measure(mlp([4, 8, 3], seed=0), beta=0.5)
    rep.save(tmp_path / "ifm")
    kind, out = write_report(tmp_path / "ifm", tmp_path / "ifm.html")
    assert kind == "complexity" and "Feature complexity per layer" in out.read_text()


def test_result_reports_check_the_output_path_first(tmp_path):
    from probe.report import nap_html

    naps = _naps()
    with pytest.raises(OutputPathError):
        nap_html(naps, tmp_path)  # a folder
    with pytest.raises(OutputPathError):
        naps.to_html(tmp_path)
    assert nap_html(naps, tmp_path / "n.html").read_text().count('data-main="true"') == 1
