"""CodebookLayer against brute-force oracles: selection, output, straight-through gradients, usage counts,
k-means initialisation, dead-code replacement, the code-id hook point."""

from __future__ import annotations

import pytest
import torch

from codebook import CodebookConfig, CodebookConfigError, CodebookLayer, CodeIdError


def brute_ids(x: torch.Tensor, codes: torch.Tensor, sim: str, k: int) -> torch.Tensor:
    """Top-k ids by an explicit loop over inputs and codes ([N, d] vs [C, d])."""
    out = []
    for v in x:
        scores = []
        for c in codes:
            if sim == "cosine":
                scores.append(float(torch.dot(v, c) / (v.norm() * c.norm())))
            elif sim == "inner":
                scores.append(float(torch.dot(v, c)))
            else:
                scores.append(-float(((v - c) ** 2).sum()))
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        out.append(sorted(order[:k]))
    return torch.tensor(out)


@pytest.mark.parametrize("sim", ["cosine", "inner", "l2"])
@pytest.mark.parametrize("k", [1, 3])
def test_selection_and_output_match_brute_force(sim, k):
    torch.manual_seed(0)
    layer = CodebookLayer(5, CodebookConfig(n_codes=11, k=k, similarity=sim), seed=1).double()
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    y = layer(x)
    ids = layer.last_codes.reshape(-1, k).sort(-1).values
    want = brute_ids(x.reshape(-1, 5), layer.codes[0].detach(), sim, k)
    assert torch.equal(ids, want)
    expected = layer.codes[0].detach()[want].mean(1).view(2, 7, 5)
    assert torch.allclose(y, expected)


def test_sum_reduction():
    layer = CodebookLayer(4, CodebookConfig(n_codes=6, k=2, reduce="sum"), seed=0)
    x = torch.randn(3, 4)
    y = layer(x)
    ids = layer.last_codes
    assert torch.allclose(y, layer.codes[0].detach()[ids].sum(1))


def test_grouped_equals_independent_codebooks():
    torch.manual_seed(0)
    grouped = CodebookLayer(4, CodebookConfig(n_codes=9), n_groups=3, seed=0)
    x = torch.randn(2, 5, 3, 4)
    y = grouped(x)
    for g in range(3):
        single = CodebookLayer(4, CodebookConfig(n_codes=9), seed=0)
        single.codes.data.copy_(grouped.codes.data[g:g + 1])
        assert torch.allclose(y[:, :, g], single(x[:, :, g]))
        assert torch.equal(grouped.last_codes[:, :, g], single.last_codes)


def test_straight_through_gradients_exact():
    torch.manual_seed(0)
    layer = CodebookLayer(3, CodebookConfig(n_codes=5, k=2, recon_coef=0.0), seed=0).double()
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 3, dtype=torch.float64)
    (layer(x) * w).sum().backward()
    assert torch.allclose(x.grad, w)  # identity to the input
    ids = layer.last_codes
    want = torch.zeros(5, 3, dtype=torch.float64)
    for n in range(6):
        for j in range(2):
            want[ids[n, j]] += w[n] / 2
    assert torch.allclose(layer.codes.grad[0], want)


def test_codebook_loss_values_and_gradient_directions():
    torch.manual_seed(0)
    layer = CodebookLayer(3, CodebookConfig(n_codes=4, recon_coef=1.0, commitment=0.5), seed=0).double()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    q = y.detach()
    mse = ((q - x.detach()) ** 2).mean()
    assert torch.allclose(layer.last_loss, 1.5 * mse)
    layer.last_loss.backward()
    # commitment pulls the input towards the code, the reconstruction term pulls the code towards the input
    assert torch.allclose(x.grad, 0.5 * 2 * (x.detach() - q) / x.numel())


def test_usage_counts_are_bincounts():
    layer = CodebookLayer(4, CodebookConfig(n_codes=7, k=2), n_groups=2, seed=0)
    x = torch.randn(10, 2, 4)
    layer(x)
    layer(x[:3])
    total = torch.zeros(2, 7)
    for batch in (x, x[:3]):
        layer2 = CodebookLayer(4, CodebookConfig(n_codes=7, k=2), n_groups=2, seed=0)
        layer2(batch)
        for g in range(2):
            total[g] += torch.bincount(layer2.last_codes[:, g].reshape(-1), minlength=7).float()
    assert torch.equal(layer.usage, total)
    assert layer.dead_mask().tolist() == (total == 0).tolist()


def test_hook_point_ablate_and_force():
    layer = CodebookLayer(4, CodebookConfig(n_codes=5), seed=0)
    x = torch.randn(2, 3, 4)
    layer.hook_codes.add_hook(lambda ids, hook: torch.full_like(ids, -1))
    assert torch.equal(layer(x), torch.zeros(2, 3, 4))
    layer.hook_codes.remove_hooks(including_permanent=True)
    layer.hook_codes.add_hook(lambda ids, hook: torch.full_like(ids, 4))
    assert torch.allclose(layer(x), layer.codes[0, 4].detach().expand(2, 3, 4))
    layer.hook_codes.remove_hooks(including_permanent=True)
    layer.hook_codes.add_hook(lambda ids, hook: torch.full_like(ids, 5))
    with pytest.raises(CodeIdError, match=r"\[0, 5\)"):
        layer(x)


def test_kmeans_init_is_a_lloyd_fixed_point_per_group():
    gen = torch.Generator().manual_seed(0)
    centers = torch.stack([20 * torch.eye(6)[:4], -20 * torch.eye(6)[2:]])  # 2 groups, 4 far-apart clusters each
    labels = torch.arange(400) % 4
    samples = centers[:, labels].transpose(0, 1) + 0.5 * torch.randn(400, 2, 6, generator=gen)
    layer = CodebookLayer(6, CodebookConfig(n_codes=4, similarity="l2", kmeans_iters=25), n_groups=2, seed=0)
    layer.kmeans_init(samples, seed=0)
    codes = layer.codes.detach()
    for g in range(2):
        assign = torch.cdist(samples[:, g], codes[g]).argmin(1)
        for c in range(4):  # every code is the mean of the samples nearest to it
            assert torch.allclose(codes[g, c], samples[assign == c, g].mean(0), atol=1e-4)
        # k-means++ seeding finds every well-separated cluster: each true centre has a code next to it
        assert float(torch.cdist(centers[g], codes[g]).min(1).values.max()) < 0.3


def test_kmeans_init_bad_samples():
    layer = CodebookLayer(3, CodebookConfig(n_codes=4), seed=0)
    with pytest.raises(CodebookConfigError, match="samples must be"):
        layer.kmeans_init(torch.randn(10, 2, 3))
    with pytest.raises(CodebookConfigError, match="NaN"):
        layer.kmeans_init(torch.full((10, 3), float("nan")))


def test_dead_code_replacement_reseeds_only_dead_codes():
    torch.manual_seed(0)
    layer = CodebookLayer(3, CodebookConfig(n_codes=6), seed=0)
    layer.train()
    x = torch.randn(20, 3)
    layer(x)
    before = layer.codes.detach().clone()
    dead = layer.dead_mask()[0].clone()
    n = layer.replace_dead_codes(torch.Generator().manual_seed(0))
    assert int(n) == int(dead.sum())
    after = layer.codes.detach()[0]
    assert torch.equal(after[~dead], before[0][~dead])
    for c in torch.nonzero(dead).flatten():  # re-seeded near a recent input
        assert float(torch.cdist(after[c:c + 1], x).min()) < 1e-2
    assert float(layer.usage.sum()) == 0


def test_config_validation_messages():
    with pytest.raises(CodebookConfigError, match=r"k must be <= n_codes \(4\)"):
        CodebookConfig(n_codes=4, k=5)
    with pytest.raises(CodebookConfigError, match="similarity"):
        CodebookConfig(similarity="dot")
    with pytest.raises(CodebookConfigError, match="unknown CodebookConfig keys"):
        CodebookConfig.from_dict({"n_codes": 3, "bogus": 1})
    assert CodebookConfig.from_dict(CodebookConfig(n_codes=3).to_dict()) == CodebookConfig(n_codes=3)
