"""Bad input is refused before any work, with a typed error that names the problem and the fix; nothing
already on disk is lost (the reliability issue's cases for probe, the command line and codebook)."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from helpers import mlp

import probe.zoo.tokfsm as tokfsm_zoo
from probe import nap
from probe.cli import main
from probe.core.artifacts import check_stamp, read_json, stamp, write_json, write_tensors
from probe.core.device import check_device
from probe.core.errors import (
    CorruptDataError,
    DataNotFoundError,
    InputShapeError,
    InvalidParameterError,
    ModelError,
    OutputPathError,
)
from probe.core.paths import cache_dir, check_output
from probe.core.table import Table

UNWRITABLE = "/proc/neurospec-no-such-folder/out.json"  # not writable even for root


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip()


# ---- output paths, checked before computing ----------------------------------------------------------------
def test_check_output_refuses_folder_file_and_unwritable(tmp_path):
    with pytest.raises(OutputPathError, match="is an existing folder; pass a file path"):
        check_output(tmp_path)
    existing = tmp_path / "f.json"
    existing.write_text("keep")
    with pytest.raises(OutputPathError, match="is an existing file; pass a folder path"):
        check_output(existing, folder=True)
    with pytest.raises(OutputPathError, match="is not writable"):
        check_output(UNWRITABLE)
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output(existing / "x.json")
    assert existing.read_text() == "keep"
    assert check_output(tmp_path / "new" / "out.json").name == "out.json"
    assert not (tmp_path / "new").exists()  # nothing created


def test_nap_mine_out_is_a_folder_refused_before_loading_anything(tmp_path, capsys, monkeypatch):
    import probe.cli.nap as cli_nap

    monkeypatch.setattr(cli_nap, "load_subject", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["nap", "mine", "--model", "mnist-mlp", "--data", "mnist", "--out", str(tmp_path)]) == 1
    assert "is an existing folder" in _error_line(capsys)


def test_nap_mine_out_unwritable(capsys, monkeypatch):
    import probe.cli.nap as cli_nap

    monkeypatch.setattr(cli_nap, "load_subject", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["nap", "mine", "--model", "mnist-mlp", "--data", "mnist", "--out", UNWRITABLE]) == 1
    assert "not writable" in _error_line(capsys)


@pytest.mark.parametrize("command", [["moe", "detect", "--model", "mnist-mlp", "--data", "mnist"],
                                     ["complexity", "measure", "--model", "mnist-mlp"]])
def test_folder_outputs_refuse_an_existing_file(tmp_path, capsys, monkeypatch, command):
    import probe.cli.complexity as cli_cx
    import probe.cli.moe as cli_moe

    for mod in (cli_moe, cli_cx):
        monkeypatch.setattr(mod, "load_subject", lambda *a, **k: pytest.fail("the model was loaded"))
    target = tmp_path / "results.json"
    target.write_text('{"keep": true}')
    assert main([*command, "--out", str(target)]) == 1
    assert "is an existing file; pass a folder path" in _error_line(capsys)
    assert target.read_text() == '{"keep": true}'


# ---- codebook train-tokfsm validates everything before training -----------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--n-codes", "0"], "n_codes must be a positive int"),
    (["--k", "20", "--n-codes", "4"], "k must be <= n_codes"),
    (["--sites", "foo"], "--sites must be a comma-separated list"),
    (["--steps", "0"], "steps must be a positive int"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "nonsense"], "device="),
])
def test_train_tokfsm_refuses_bad_settings_before_any_work(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setattr(tokfsm_zoo, "pretrained", lambda *a, **k: pytest.fail("the base model was loaded"))
    assert main(["codebook", "train-tokfsm", "--out", str(tmp_path / "run"), *args]) == 1
    assert message in _error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_check_device():
    assert check_device("cpu").type == "cpu"
    with pytest.raises(InvalidParameterError, match="must be a torch device"):
        check_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match="CUDA is not available"):
            check_device("cuda")
    # an index past the machine's devices is refused on any machine (none, or fewer than 100 GPUs)
    with pytest.raises(InvalidParameterError, match="CUDA"):
        check_device("cuda:99")


@pytest.mark.parametrize("script", ["lm_smollm2.py", "lm_smollm2_attention.py"])
def test_language_model_benchmarks_refuse_an_unavailable_device_in_one_line(script: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / script
    run = subprocess.run([sys.executable, str(path), "--device", "cuda:99"], capture_output=True, text=True,
                         timeout=300)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and run.stdout == ""
    assert "cuda:99" in lines[-1] and lines[-1].startswith(f"{script}: error:")


# ---- shipped TokFSM models, no half-written cache entries --------------------------------------------------
def test_pretrained_tokfsm_loads_the_shipped_weights_without_touching_the_cache(tmp_path):
    model = tokfsm_zoo.pretrained("relu", cache_dir=tmp_path, verbose=False)
    assert model.cfg.act_fn == "relu" and model.cfg.n_layers == 4
    assert list(tmp_path.iterdir()) == []


def test_interrupted_tokfsm_training_leaves_no_empty_cache_folder(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokfsm_zoo, "train_model", interrupted)
    cfg = tokfsm_zoo.TokFSMTrainConfig(steps=3)
    with pytest.raises(KeyboardInterrupt):
        tokfsm_zoo.pretrained("relu", cache_dir=tmp_path, config=cfg, verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_one_cache_default(monkeypatch, tmp_path):
    monkeypatch.delenv("NEUROSPEC_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "neurospec"
    monkeypatch.setenv("NEUROSPEC_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


# ---- models that do not fit the data or the NAPs ------------------------------------------------------------
def test_mine_with_inputs_of_the_wrong_shape_is_a_typed_error():
    model = mlp([784, 16, 10], seed=0, flatten=True)
    x = torch.rand(8, 3, 32, 32)  # CIFAR-shaped inputs into an MNIST-shaped model
    with pytest.raises(InputShapeError, match=r"cannot take the loader's inputs of shape \(3, 32, 32\)"):
        nap.mine(model, [(x, torch.zeros(8, dtype=torch.long))], verbose=False)


def test_naps_refuse_another_model():
    torch.manual_seed(0)
    a, b = mlp([4, 8, 8, 3], seed=0), mlp([4, 8, 8, 8, 3], seed=0)
    x = torch.randn(64, 4)
    naps = nap.mine(a, [(x, a(x).argmax(1))], delta=1.0, only_correct=False, verbose=False)
    assert naps.model_relus == ["1", "3"]
    with pytest.raises(ModelError, match="mined on a model with ReLU layers"):
        naps.evaluate(b, [(x, torch.zeros(64, dtype=torch.long))], verbose=False)
    wider = mlp([4, 8, 16, 3], seed=0)
    with pytest.raises(ModelError, match=r"has shape \(16,\) in this model but \(8,\)"):
        naps.evaluate(wider, [(x, torch.zeros(64, dtype=torch.long))], verbose=False)
    more_outputs = mlp([4, 8, 8, 5], seed=0)
    with pytest.raises(ModelError, match="5 outputs but the NAPs have 3 classes"):
        naps.evaluate(more_outputs, [(x, torch.zeros(64, dtype=torch.long))], verbose=False)


def test_nap_file_keeps_the_model_signature(tmp_path):
    model = mlp([4, 8, 3], seed=0)
    x = torch.randn(32, 4)
    naps = nap.mine(model, [(x, model(x).argmax(1))], verbose=False)
    back = nap.NAPSet.load(naps.save(tmp_path / "naps.json"))
    assert back.model_relus == naps.model_relus == ["1"]


# ---- damaged and foreign artifacts -------------------------------------------------------------------------
def test_truncated_codebooks_file_is_a_typed_error(tmp_path):
    import codebook
    from probe.zoo.tokfsm import make_model

    model = make_model("relu", n_layers=1, d_model=16, d_mlp=32, n_heads=2)
    cbs = codebook.attach(model, codebook.site_names(model, ["mlp_out"]), codebook.CodebookConfig(n_codes=8))
    codebook.save_codebooks(cbs, tmp_path)
    codebook.detach(model)
    blob = (tmp_path / "codebooks.safetensors").read_bytes()
    (tmp_path / "codebooks.safetensors").write_bytes(blob[:5])
    with pytest.raises(CorruptDataError, match="damaged or not a safetensors file"):
        codebook.load_codebooks(model, tmp_path)


def test_artifact_stamps(tmp_path):
    path = write_json(tmp_path / "a.json", {**stamp("nap"), "x": 1})
    assert read_json(path, "nap")["x"] == 1
    check_stamp({"format": "neurospec.nap/1"}, "nap")  # files from before the unified stamp
    with pytest.raises(CorruptDataError, match="not a neurospec moe file"):
        read_json(path, "moe")
    with pytest.raises(CorruptDataError, match="newer than the version 1 this neurospec reads: upgrade"):
        check_stamp({"format": "neurospec.nap", "neurospec_format_version": 7}, "nap")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        read_json(tmp_path / "missing.json", "nap")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CorruptDataError, match="not valid JSON"):
        read_json(tmp_path / "bad.json", "nap")


def test_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        json_file = write_json(tmp_path / "r.json", {"x": 1})
        tensor_file = write_tensors(tmp_path / "t.safetensors", {"w": torch.zeros(2)})
    finally:
        os.umask(old)
    assert stat.S_IMODE(json_file.stat().st_mode) == 0o644
    assert stat.S_IMODE(tensor_file.stat().st_mode) == 0o644
    os.chmod(json_file, 0o640)
    write_json(json_file, {"x": 2})
    assert stat.S_IMODE(json_file.stat().st_mode) == 0o640  # rewriting keeps the file's permissions


# ---- results that read well ---------------------------------------------------------------------------------
def test_naps_print_short_and_tables_print_as_tables():
    model = mlp([4, 8, 3], seed=0)
    x = torch.randn(32, 4)
    naps = nap.mine(model, [(x, model(x).argmax(1))], verbose=False)
    text = repr(naps)
    assert text.startswith("NAPSet(delta=0.99, classes=3") and "tensor" not in text
    table = naps.table()
    assert isinstance(table, list) and table[0]["class"] == "0"
    assert str(table).splitlines()[1].split() == ["class", "samples", "active", "inactive", "total"]
    stats = naps.evaluate(model, [(x, model(x).argmax(1))], verbose=False)
    assert "mean coverage" in repr(stats) and "coverage" in str(stats.table())
    assert "<table>" in Table([{"a": 1}])._repr_html_()


# ---- long jobs resume ----------------------------------------------------------------------------------------
def test_mining_resumes_from_its_checkpoint_with_identical_counts(tmp_path):
    model = mlp([4, 8, 8, 3], seed=0)
    torch.manual_seed(1)
    batches = [(x, model(x).argmax(1)) for x in torch.randn(6, 32, 4)]
    full = nap.mine(model, batches, delta=0.9, verbose=False)
    ckpt = tmp_path / "naps.partial.safetensors"

    class Interrupted(Exception):
        pass

    def interrupted_after(n):
        for i, b in enumerate(batches):
            if i == n:
                raise Interrupted
            yield b

    with pytest.raises(Interrupted):  # checkpoint_every=0: a checkpoint after every batch
        nap.mine(model, interrupted_after(4), delta=0.9, verbose=False, checkpoint=ckpt, checkpoint_every=0)
    assert ckpt.exists()
    counted = []

    def counting():
        for b in batches:
            counted.append(len(b[0]))
            yield b

    resumed = nap.mine(model, counting(), delta=0.9, verbose=False, checkpoint=ckpt, checkpoint_every=0)
    assert resumed == full and resumed.model_relus == full.model_relus
    other = nap.mine(model, batches, delta=0.9, layers=["1"], verbose=False, checkpoint=tmp_path / "o.st",
                     checkpoint_every=0)
    assert other.layers == ["1"]
    with pytest.raises(Exception, match="belongs to another mining run"):
        nap.mine(model, batches, delta=0.9, layers=["3"], verbose=False, checkpoint=tmp_path / "o.st")


@pytest.mark.slow
def test_sigterm_in_the_cli_exits_143_and_keeps_the_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "slow.py"
    script.write_text(
        "import sys, time, torch\n"
        "from torch import nn\n"
        "import probe.cli.nap as cli\n"
        "net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))\n"
        "def batches():\n"
        "    for i in range(1000):\n"
        "        x = torch.randn(16, 4)\n"
        "        time.sleep(0.05)\n"
        "        yield x, torch.randint(0, 3, (16,))\n"
        "class DS:\n"
        "    classes = ['a', 'b', 'c']\n"
        "    def __len__(self): return 16000\n"
        "cli.load_subject = lambda args: net\n"
        "cli.data_loader = lambda args, split: (DS(), batches())\n"
        "from probe.cli import main\n"
        "sys.exit(main(['nap', 'mine', '--model', 'x', '--data', 'mnist', '--quiet', '--out', sys.argv[1]]))\n")
    out = tmp_path / "naps.json"
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "naps.json.partial.safetensors"
    deadline = time.monotonic() + 120
    while not partial.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert partial.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint written"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
    assert partial.exists() and not out.exists()


def test_complexity_of_a_model_that_pools_flat_features_is_a_model_error():
    from torch import nn

    from probe import complexity

    class PoolsFlat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = nn.functional.adaptive_avg_pool2d(torch.relu(self.a(x)), 1)
            return self.b(h.reshape(h.shape[0], -1))

    with pytest.raises(ModelError, match="cannot follow the model's features"):
        complexity.measure(PoolsFlat(), input_shape=(4,))


@pytest.mark.parametrize("args,message", [
    (["--model", "resnet50", "--data", "mnist"], "unknown reference model 'resnet50'"),
    (["--onnx", "/no/such/net.onnx", "--data", "mnist"], "ONNX file '/no/such/net.onnx' does not exist"),
    (["--model", "mnist-mlp", "--data", "imagenet"], "--data must be one of"),
    (["--model", "mnist-mlp", "--data", "mnist", "--batch-size", "0"], "--batch-size must be an int >= 1"),
    (["--model", "mnist-mlp", "--data", "mnist", "--limit", "-5"], "--limit must be an int >= 1"),
    (["--model", "mnist-mlp", "--data", "mnist", "--delta", "2"], "delta must be in (0.5, 1]"),
])
def test_nap_mine_checks_its_options_before_loading_the_model(tmp_path, capsys, monkeypatch, args, message):
    from probe.zoo import reference

    monkeypatch.setattr(reference, "train_reference", lambda *a, **k: pytest.fail("the model was trained"))
    assert main(["nap", "mine", *args, "--out", str(tmp_path / "n.json")]) == 1
    assert message in _error_line(capsys)


def test_complexity_sweep_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import sys

    from probe import complexity

    measure_module = sys.modules["probe.complexity.measure"]  # the attribute is the function measure()

    model = mlp([6, 12, 12, 3], seed=0).eval()
    x = torch.randn(64, 6)
    loader = [(x, model(x).argmax(1))]
    ckpt = tmp_path / "sweep.partial.json"
    full = complexity.sweep(model, [0.1, 0.3, 0.5], loader)
    real_run, calls = measure_module._run, []

    def stop_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args[4])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(measure_module, "_run", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        complexity.sweep(model, [0.1, 0.3, 0.5], loader, checkpoint=ckpt)
    assert [p.beta for p in complexity.SweepResult.load(ckpt).points] == [0.1, 0.3]
    calls.clear()
    monkeypatch.setattr(measure_module, "_run", lambda *a, **k: (calls.append(a[4]), real_run(*a, **k))[1])
    resumed = complexity.sweep(model, [0.1, 0.3, 0.5], loader, checkpoint=ckpt)
    assert calls == [0.5]  # only the beta the interrupted run had not measured
    assert [(p.beta, p.accuracy, p.params) for p in resumed.points] == [
        (p.beta, p.accuracy, p.params) for p in full.points]
    with pytest.raises(Exception, match="made with other settings"):
        complexity.sweep(model, [0.1], loader, rule="paper", checkpoint=ckpt)


def test_data_root_is_found_from_any_working_directory(tmp_path, monkeypatch, data_root):
    from probe.core.paths import data_root as resolve

    monkeypatch.delenv("NEUROSPEC_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/data here: the repository's sibling folder is found
    assert resolve() == data_root.resolve()
