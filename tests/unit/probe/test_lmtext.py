"""probe.data.lmtext without the language model: the keyword classifier, the corpus container, and
build_corpus's batching and cache on a stand-in model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from probe.core.errors import InvalidParameterError, ModelError
from probe.data import lmtext
from probe.data.lmtext import LMText, build_corpus, classify_topic, on_topic, topic_hits


def test_keyword_classifier():
    assert classify_topic("The striker scored and the team won the match.") == "sports"
    assert classify_topic("Preheat the oven, then bake the bread with butter and sugar.") == "cooking"
    assert classify_topic("Nothing to see here.") is None
    assert classify_topic("rain and football") is None  # a tie is no verdict
    assert on_topic("rain and football", "weather") and on_topic("rain and football", "sports")
    hits = topic_hits("The category of cats; the window appears to apply.")  # whole-word stems
    assert hits["animals"] == 1 and hits["weather"] == 0 and hits["technology"] == 0
    with pytest.raises(InvalidParameterError, match="unknown topic"):
        on_topic("x", "politics")
    assert set(lmtext.TOPICS) == set(lmtext.KEYWORDS) and all(len(p) == 10 for p in lmtext.TOPICS.values())


def _corpus() -> LMText:
    prompts = [f"{t} opening {i}" for t in ("music", "sports") for i in range(4)]
    topics = [p.split()[0] for p in prompts]
    toks = [[i, i + 1, i + 2, 7, 8][: 3 + i % 3] for i in range(8)]
    conts = ["the band played a song" if t == "music" else "the team won the match" for t in topics]
    return LMText([p + " " + c for p, c in zip(prompts, conts, strict=True)], conts, prompts, topics, toks,
                  [2] * 8, {"seed": 0})


def test_corpus_split_windows_save_load(tmp_path):
    c = _corpus()
    assert c.topic_names == ["music", "sports"] and c.topic_ids().tolist() == [0] * 4 + [1] * 4
    train, ev = c.split(0.25)
    assert len(train) == 6 and len(ev) == 2 and not set(train.prompts) & set(ev.prompts)
    assert sorted(ev.topics) == ["music", "sports"]
    tokens, labels = c.windows(4)
    assert tokens.shape == labels.shape == (len([t for t in c.tokens if len(t) >= 4]), 4)
    assert c.agreement() == 1.0
    # the first n sampled tokens only: token 7 decodes to a sports word, others to nothing on topic
    decode = lambda ids: " ".join("goal" if i == 7 else "x" for i in ids)  # noqa: E731
    firsts = [t[2:3] for t in c.tokens]                  # prompt length 2: the first sampled token of each text
    want = {tp: sum(tp == "sports" and f == [7] for f, t in zip(firsts, c.topics, strict=True) if t == tp) / 4
            for tp in ("music", "sports")}
    assert c.topic_agreement(1, decode) == want
    assert c.agreement(1, decode) == pytest.approx(sum(want.values()) / 2)
    with pytest.raises(InvalidParameterError, match="decode"):
        c.agreement(1)
    with pytest.raises(InvalidParameterError, match="n_tokens"):
        c.agreement(0, decode)
    with pytest.raises(InvalidParameterError, match="no text has 9 tokens"):
        c.windows(9)
    back = LMText.load(c.save(tmp_path / "c.json"))
    assert back == c


class _FakeLM(nn.Module):
    """Tokens are characters; generation appends ``(last + 1) % 50``, whatever the sampling settings."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.cfg = SimpleNamespace(model_name="fake-lm")
        self.tokenizer = SimpleNamespace(decode=lambda ids: "".join(chr(97 + i % 26) for i in ids))
        self.calls: list[tuple[int, ...]] = []

    def to_tokens(self, text: str, prepend_bos: bool = False) -> torch.Tensor:
        return torch.tensor([[ord(ch) % 50 for ch in text]])

    def generate(self, tokens: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        self.calls.append(tuple(tokens.shape))
        for _ in range(max_new_tokens):
            tokens = torch.cat([tokens, (tokens[:, -1:] + 1) % 50], dim=1)
        return tokens


def test_build_corpus_batches_by_length_and_caches(tmp_path):
    topics = {"music": ("ab", "abc"), "sports": ("xy",)}
    model = _FakeLM()
    c = build_corpus(model, n_samples=3, max_new_tokens=4, batch_size=4, topics=topics, cache=tmp_path)
    assert len(c) == 9 and c.topics == ["music"] * 6 + ["sports"] * 3
    assert all(len(t) == n + 4 for t, n in zip(c.tokens, c.prompt_lengths, strict=True))
    assert sorted(model.calls) == [(2, 2), (3, 3), (4, 2)]  # 9 texts: length-2 prompts (6) in 4 + 2, length 3
    assert c.continuations[0] == model.tokenizer.decode(c.tokens[0][2:])
    again = build_corpus(model, n_samples=3, max_new_tokens=4, batch_size=4, topics=topics, cache=tmp_path)
    assert again == c and len(model.calls) == 3  # read from the cache
    build_corpus(model, n_samples=3, max_new_tokens=4, batch_size=4, topics=topics, cache=tmp_path, seed=1)
    assert len(model.calls) == 6  # another seed, another entry
    assert len(list((tmp_path / "lmtext").glob("fake-lm-*.json"))) == 2


def test_build_corpus_bad_input():
    with pytest.raises(InvalidParameterError, match="n_samples"):
        build_corpus(_FakeLM(), n_samples=0)
    with pytest.raises(InvalidParameterError, match="temperature"):
        build_corpus(_FakeLM(), temperature=0.0)
    with pytest.raises(ModelError, match="tokenizer"):
        build_corpus(nn.Linear(2, 2))
