"""Reference models: construction, determinism, resume after interruption, cache, bad input."""

from __future__ import annotations

import pytest
import torch

from probe.core.errors import ModelError
from probe.zoo import reference as models


@pytest.mark.parametrize("name,shape", [("mnist-mlp", (1, 28, 28)), ("mnist-cnn", (1, 28, 28)),
                                        ("cifar10-cnn", (3, 32, 32))])
def test_build_shapes_and_relus(name, shape):
    model = models.build_reference(name)
    assert model(torch.rand(3, *shape)).shape == (3, 10)
    assert sum(isinstance(m, torch.nn.ReLU) for m in model.modules()) >= 2


def test_build_is_seeded():
    a, b = models.build_reference("mnist-mlp", seed=1), models.build_reference("mnist-mlp", seed=1)
    c = models.build_reference("mnist-mlp", seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a[2].weight, c[2].weight)


def test_unknown_name_lists_choices():
    with pytest.raises(ModelError, match="mnist-mlp"):
        models.build_reference("resnet50")


def test_bad_overrides(tmp_path):
    with pytest.raises(ModelError, match="epochs"):
        models.train_reference("mnist-mlp", epochs=0, cache_dir=tmp_path)


def test_load_reference_missing_says_how_to_train(tmp_path):
    with pytest.raises(ModelError, match="train_reference"):
        models.load_reference("mnist-cnn", cache_dir=tmp_path)


def test_normalize_rejects_zero_std():
    with pytest.raises(ModelError, match="std"):
        models.Normalize((0.0,), (0.0,))


def test_augment_shapes_and_determinism():
    x = torch.rand(5, 3, 32, 32)
    a = models._augment(x, torch.Generator().manual_seed(3))
    b = models._augment(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)


def test_training_is_deterministic_and_resumes(tmp_path, monkeypatch, data_root):
    kw = dict(root=data_root, seed=3, epochs=2, train_subset=1500, verbose=False)
    ref = models.train_reference("mnist-mlp", cache_dir=tmp_path / "a", **kw)
    again = models.train_reference("mnist-mlp", cache_dir=tmp_path / "b", **kw)
    for (k, v), (_, w) in zip(ref.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(v, w), k

    # Interrupt the third run while it writes its second checkpoint, then resume.
    real_write = models.write_tensors
    calls = {"n": 0}

    def flaky(path, tensors, metadata=None):
        if metadata is not None:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
        real_write(path, tensors, metadata)

    monkeypatch.setattr(models, "write_tensors", flaky)
    with pytest.raises(KeyboardInterrupt):
        models.train_reference("mnist-mlp", cache_dir=tmp_path / "c", **kw)
    monkeypatch.setattr(models, "write_tensors", real_write)
    resumed = models.train_reference("mnist-mlp", cache_dir=tmp_path / "c", **kw)
    for (k, v), (_, w) in zip(ref.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(v, w), k
    assert resumed.reference_info["test_accuracy"] == ref.reference_info["test_accuracy"]

    # Cached: a fourth call loads instead of training.
    cached = models.train_reference("mnist-mlp", cache_dir=tmp_path / "a", **kw)
    assert cached.reference_info == ref.reference_info
