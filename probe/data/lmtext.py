"""Topic-labelled English text without downloads: a language model's own sampled continuations.

No text corpus ships with the packages installed here and nothing may be downloaded, so the training and
evaluation text for the language-model analyses is written by the model itself: each of :data:`TOPICS`
(sports, cooking, science, music, weather, travel, animals, technology) has ten hand-written opening
phrases, and the model (SmolLM2-135M-Instruct, ``probe.zoo.load("smollm2-135m")``) samples ``n_samples``
continuations of each (temperature 0.8, top-p 0.95, a fixed number of new tokens, seeded). Every text keeps
its topic (that of its opening), its prompt and its token ids. The corpus is cached as JSON under
``probe.core.paths.cache_dir()/lmtext/``, keyed by the model, the prompts and every setting, including
the seed, so a second call returns the same texts at once.

:func:`topic_hits` / :func:`classify_topic` are the keyword classifier the steering benchmark uses (word
stems per topic in :data:`KEYWORDS`); :data:`NEUTRAL_PROMPTS` are topic-free openings to steer from.

The texts are model-written: fluent, on-topic at the start and drifting at times (about what a 135M model
writes); they are not human text and carry the model's own biases. :meth:`LMText.agreement` reports how
often the keyword classifier agrees with the prompt's topic.

Example:
    >>> from probe.data.lmtext import TOPICS, classify_topic
    >>> sorted(TOPICS)[:3]
    ['animals', 'cooking', 'music']
    >>> classify_topic("The striker scored a late goal and the team won the match.")
    'sports'
    >>> model = probe.zoo.load("smollm2-135m")                             # doctest: +SKIP
    >>> corpus = build_corpus(model, n_samples=4, max_new_tokens=40)      # doctest: +SKIP
    >>> train, test = corpus.split(0.25)                                   # doctest: +SKIP
    >>> tokens, labels = train.windows(48)                                 # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from probe.core.artifacts import check_stamp, read_json, stamp, write_json
from probe.core.errors import InvalidParameterError, ModelError
from probe.core.paths import cache_dir

__all__ = [
    "KEYWORDS",
    "NEUTRAL_PROMPTS",
    "TOPICS",
    "LMText",
    "build_corpus",
    "classify_topic",
    "on_topic",
    "topic_hits",
    "topic_pattern",
]

logger = logging.getLogger(__name__)
_KIND = "lmtext"

#: Opening phrases per topic; the model continues each one.
TOPICS: dict[str, tuple[str, ...]] = {
    "sports": (
        "The football match last night", "Our basketball team won", "At the Olympic stadium, the runners",
        "The tennis player served", "In the final minutes of the soccer game,", "The coach told the players",
        "The baseball season starts", "The marathon runners crossed", "Fans cheered as the striker",
        "The hockey team practiced",
    ),
    "cooking": (
        "To make this soup, first chop", "The recipe calls for two cups of flour", "In the kitchen, the chef",
        "Bake the bread in the oven", "My grandmother's pasta sauce", "Fry the onions and garlic",
        "For dinner tonight I cooked", "Whisk the eggs and sugar", "The secret to a good curry",
        "Slice the tomatoes and season",
    ),
    "science": (
        "The scientists in the laboratory", "In physics, the energy of", "The experiment showed that the cells",
        "Chemists mixed the two molecules", "Astronomers observed a distant galaxy", "The theory of evolution",
        "Researchers measured the DNA", "The atoms in a crystal", "In biology class we learned",
        "The telescope revealed",
    ),
    "music": (
        "The band played their new song", "She practiced the piano", "The orchestra performed",
        "The guitarist tuned his guitar", "At the concert, the singer", "The album was recorded",
        "The composer wrote a symphony", "The drummer kept the rhythm", "Jazz musicians improvised",
        "The choir sang",
    ),
    "weather": (
        "The weather forecast for tomorrow", "Heavy rain fell", "A storm is moving", "The temperature dropped",
        "Snow covered the", "The sunny weather", "Strong winds blew", "The hurricane season",
        "Clouds gathered over the", "The meteorologist said",
    ),
    "travel": (
        "Our trip to Paris", "The flight to Tokyo", "We booked a hotel", "The tourists visited",
        "On our vacation in Italy", "Pack your suitcase", "The train journey through the mountains",
        "At the airport, passengers", "Backpacking across Europe,", "The beach resort",
    ),
    "animals": (
        "The lion hunted", "My dog loves to", "The birds built a nest", "Elephants live in",
        "The cat jumped", "Wolves travel in packs", "The farmer fed the cows", "Dolphins are intelligent",
        "The zoo keeper fed the", "A small rabbit",
    ),
    "technology": (
        "The new smartphone", "Software engineers wrote", "The computer crashed", "Artificial intelligence is",
        "The website was hacked", "Install the app", "The robot was programmed", "Our laptop battery",
        "The internet connection", "Programmers use Python to",
    ),
}

#: Word stems per topic: a word matches a stem when it starts with it (case-insensitive); a stem ending in
#: ``=`` matches that whole word only (``"cat="`` is not ``"category"``).
KEYWORDS: dict[str, tuple[str, ...]] = {
    "sports": ("football", "soccer", "basketball", "tennis", "baseball", "hockey", "olympic", "match", "goal",
               "team", "player", "coach", "score", "championship", "tournament", "league", "stadium", "athlet",
               "marathon", "race=", "races=", "racing", "winn", "won=", "defeat", "striker", "game", "sport",
               "fans=", "medal", "referee"),
    "cooking": ("cook", "recipe", "kitchen", "chef", "bake", "baking", "oven", "flour", "sugar", "butter",
                "salt", "pepper", "garlic", "onion", "sauce", "soup", "pasta", "dinner", "meal", "fry=", "fried",
                "frying", "boil", "dish", "ingredient", "tast", "delicious", "egg", "tomato", "curry", "spice",
                "stir"),
    "science": ("scien", "laborator", "experiment", "physics", "chemi", "biolog", "molecul", "atom", "cell=",
                "cells=", "dna=", "gene=", "genes=", "genetic", "energy", "theory", "research", "galax",
                "telescope", "astronom", "evolution", "particle", "hypothes", "electron", "protein", "species",
                "quantum", "universe", "planet", "organism", "measur"),
    "music": ("music", "song", "band=", "bands=", "piano", "guitar", "orchestra", "concert", "singer", "sing=",
              "sings=", "singing", "sang=", "album", "compos", "symphon", "drum", "rhythm", "jazz", "choir",
              "melod", "lyric", "chord", "tune", "violin", "musician", "audience", "pianist", "guitarist"),
    "weather": ("weather", "rain", "storm", "snow", "wind=", "winds=", "windy", "temperature", "forecast",
                "cloud", "sunny", "sun=", "sunshine", "hurricane", "cold", "warm", "heat", "humid", "thunder",
                "lightning", "fog", "meteorolog", "climate", "flood", "ice=", "icy=", "freez", "shower",
                "breez", "tornado", "drought", "celsius", "fahrenheit"),
    "travel": ("travel", "trip", "flight", "hotel", "tourist", "tourism", "vacation", "holiday", "airport",
               "passenger", "journey", "suitcase", "luggage", "beach", "resort", "passport", "visit",
               "destination", "paris", "tokyo", "italy", "europe", "city", "cities", "country", "train=",
               "trains=", "tour=", "tours=", "explor", "backpack", "booked", "abroad", "sightseeing"),
    "animals": ("animal", "lion", "dog", "cat=", "cats=", "bird", "nest", "elephant", "wolf", "wolves", "cow=",
                "cows=", "dolphin", "zoo", "rabbit", "horse", "pet=", "pets=", "wild", "hunt", "fur=", "furry",
                "tail", "prey", "species", "mammal", "farm", "puppy", "puppies", "kitten", "fish", "bear=",
                "bears=", "tiger", "monkey", "feather"),
    "technology": ("technolog", "smartphone", "phone", "software", "computer", "artificial", "intelligen",
                   "website", "hack", "app=", "apps=", "robot", "program", "laptop", "battery", "internet",
                   "python", "code", "coding", "data=", "device", "digital", "online", "user", "network",
                   "algorithm", "server", "cyber", "engineer", "screen", "download"),
}

#: Topic-free openings, the starting points of topic steering.
NEUTRAL_PROMPTS: tuple[str, ...] = (
    "I want to tell you about", "Yesterday, I", "Here is what happened:", "Let me explain why",
    "The best thing about", "My friend told me that", "In this article, we", "Everyone knows that",
)

@lru_cache(maxsize=1)
def _stem_patterns() -> dict[str, re.Pattern[str]]:
    def alt(stem: str) -> str:
        return re.escape(stem[:-1]) + r"\b" if stem.endswith("=") else re.escape(stem) + "[a-z]*"

    return {t: re.compile(r"\b(?:" + "|".join(alt(s) for s in stems) + ")", re.IGNORECASE)
            for t, stems in KEYWORDS.items()}


def topic_pattern(topic: str) -> re.Pattern[str]:
    """The compiled keyword regex of ``topic`` (its stems from :data:`KEYWORDS`), e.g. for
    :func:`codebook.regex_labels`.

    Raises:
        InvalidParameterError: unknown topic.

    Example:
        >>> [m.group() for m in topic_pattern("weather").finditer("Rain, then snow; the window stayed shut.")]
        ['Rain', 'snow']
    """
    if topic not in KEYWORDS:
        raise InvalidParameterError(f"unknown topic {topic!r}; choose one of {sorted(KEYWORDS)}")
    return _stem_patterns()[topic]


def topic_hits(text: str) -> dict[str, int]:
    """Keyword hits per topic: how many words of ``text`` start with one of the topic's stems.

    Example:
        >>> topic_hits("Rain and snow: the forecast says the storm will pass.")["weather"]
        4
    """
    return {t: len(p.findall(text)) for t, p in _stem_patterns().items()}


def classify_topic(text: str) -> str | None:
    """The topic with the most keyword hits (``None`` without any hit, or on a tie for the most).

    Example:
        >>> classify_topic("We booked a hotel near the airport for our trip."), classify_topic("Hello there.")
        ('travel', None)
    """
    hits = topic_hits(text)
    best = max(hits.values())
    tops = [t for t, n in hits.items() if n == best]
    return tops[0] if best > 0 and len(tops) == 1 else None


def on_topic(text: str, topic: str) -> bool:
    """Whether ``text`` is about ``topic`` by the keyword classifier: at least one hit and no other topic
    with more (ties with ``topic`` count as on-topic).

    Raises:
        InvalidParameterError: unknown topic.

    Example:
        >>> on_topic("The chef baked bread in the oven.", "cooking")
        True
    """
    if topic not in KEYWORDS:
        raise InvalidParameterError(f"unknown topic {topic!r}; choose one of {sorted(KEYWORDS)}")
    hits = topic_hits(text)
    return hits[topic] > 0 and hits[topic] == max(hits.values())


@dataclass
class LMText:
    """A topic-labelled corpus of model-written texts.

    Attributes:
        texts: the full texts (prompt + continuation), decoded.
        continuations: the sampled part only.
        prompts, topics: each text's opening phrase and its topic (a key of :data:`TOPICS`).
        tokens: each text's token ids (prompt + continuation, no BOS), as generated.
        prompt_lengths: the number of prompt tokens of each text.
        settings: model name, sampling settings, seed, build time.
    """

    texts: list[str]
    continuations: list[str]
    prompts: list[str]
    topics: list[str]
    tokens: list[list[int]]
    prompt_lengths: list[int]
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def topic_names(self) -> list[str]:
        """The topics in class-id order (sorted names)."""
        return sorted(set(self.topics))

    def topic_ids(self) -> torch.Tensor:
        """Each text's topic as a class id (index into :attr:`topic_names`), ``LongTensor [n]``."""
        names = self.topic_names
        return torch.tensor([names.index(t) for t in self.topics], dtype=torch.long)

    def subset(self, index: Sequence[int]) -> LMText:
        """The texts at ``index`` (same settings)."""
        idx = list(index)
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return LMText(pick(self.texts), pick(self.continuations), pick(self.prompts), pick(self.topics),
                      pick(self.tokens), pick(self.prompt_lengths), dict(self.settings))

    def split(self, eval_share: float = 0.25) -> tuple[LMText, LMText]:
        """``(train, eval)`` split by prompt: every ``round(1 / eval_share)``-th prompt of each topic goes to
        eval with all its samples, so no opening is in both halves.

        Raises:
            InvalidParameterError: ``eval_share`` outside (0, 1).
        """
        if not 0 < eval_share < 1:
            raise InvalidParameterError(f"eval_share must lie in (0, 1); got {eval_share}")
        every = max(2, round(1 / eval_share))
        order: dict[str, list[str]] = {}
        for t, p in zip(self.topics, self.prompts, strict=True):
            if p not in order.setdefault(t, []):
                order[t].append(p)
        held = {p for ps in order.values() for i, p in enumerate(ps) if i % every == every - 1}
        ev = [i for i, p in enumerate(self.prompts) if p in held]
        tr = [i for i, p in enumerate(self.prompts) if p not in held]
        return self.subset(tr), self.subset(ev)

    def windows(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens [n, length], topic labels [n, length])``: the first ``length`` tokens of every text at least
        that long (texts are never padded or joined); every position carries its text's topic id.

        Raises:
            InvalidParameterError: no text has ``length`` tokens.
        """
        keep = [i for i, t in enumerate(self.tokens) if len(t) >= length]
        if not keep:
            raise InvalidParameterError(f"no text has {length} tokens (the longest has "
                                        f"{max(map(len, self.tokens), default=0)}); choose a smaller length")
        toks = torch.tensor([self.tokens[i][:length] for i in keep], dtype=torch.long)
        ids = self.topic_ids()[keep]
        return toks, ids[:, None].expand(-1, length).clone()

    def agreement(self, n_tokens: int | None = None, decode: Callable[[list[int]], str] | None = None) -> float:
        """Share of continuations that the keyword classifier puts on their prompt's topic (:func:`on_topic`).

        With ``n_tokens``, only the first ``n_tokens`` sampled tokens of each continuation count (decoded with
        ``decode``, e.g. ``model.tokenizer.decode``): the share a topic's own opening reaches at the length of a
        steering run, the reference a steered share can be read against.

        Raises:
            InvalidParameterError: ``n_tokens`` below 1, or given without ``decode``.

        Example:
            >>> corpus.agreement(), corpus.agreement(24, model.tokenizer.decode)   # doctest: +SKIP
            (0.678, 0.553)
        """
        hits = self._on_topic(n_tokens, decode)
        return sum(hits) / len(hits) if hits else float("nan")

    def topic_agreement(self, n_tokens: int | None = None,
                        decode: Callable[[list[int]], str] | None = None) -> dict[str, float]:
        """:meth:`agreement` per topic: ``{topic: share}``.

        Raises:
            InvalidParameterError: ``n_tokens`` below 1, or given without ``decode``.
        """
        by_topic: dict[str, list[bool]] = {}
        for topic, hit in zip(self.topics, self._on_topic(n_tokens, decode), strict=True):
            by_topic.setdefault(topic, []).append(hit)
        return {t: sum(v) / len(v) for t, v in sorted(by_topic.items())}

    def _on_topic(self, n_tokens: int | None, decode: Callable[[list[int]], str] | None) -> list[bool]:
        """Per text: does the classifier put its continuation (or its first ``n_tokens`` tokens) on its topic."""
        if n_tokens is not None and (int(n_tokens) < 1 or decode is None):
            raise InvalidParameterError(f"n_tokens must be >= 1 and come with a decode function; got {n_tokens!r} "
                                        f"and decode={decode!r}")
        hits = []
        for i, topic in enumerate(self.topics):
            text = self.continuations[i]
            if n_tokens is not None:
                start = self.prompt_lengths[i]
                text = decode(list(self.tokens[i][start:start + int(n_tokens)]))
            hits.append(on_topic(text, topic))
        return hits

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the corpus as one JSON file (atomically)."""
        return write_json(Path(path), {**stamp(_KIND), "settings": self.settings, "texts": self.texts,
                                       "continuations": self.continuations, "prompts": self.prompts,
                                       "topics": self.topics, "tokens": self.tokens,
                                       "prompt_lengths": self.prompt_lengths})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LMText:
        """Read a corpus written by :meth:`save`.

        Raises:
            DataNotFoundError: no file. CorruptDataError: not a corpus file.
        """
        obj = read_json(path, what="language-model text corpus")
        check_stamp(obj, _KIND, path, what="neurospec language-model text corpus")
        return cls(obj["texts"], obj["continuations"], obj["prompts"], obj["topics"], obj["tokens"],
                   obj["prompt_lengths"], obj["settings"])


def _corpus_key(model_name: str, topics: dict[str, tuple[str, ...]], settings: dict[str, Any]) -> str:
    blob = json.dumps({"model": model_name, "topics": topics, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@torch.no_grad()
def build_corpus(model: Any, *, n_samples: int = 4, max_new_tokens: int = 40, temperature: float = 0.8,
                 top_p: float = 0.95, seed: int = 0, batch_size: int = 16,
                 topics: dict[str, Sequence[str]] | None = None, cache: str | os.PathLike[str] | None = None,
                 use_cache: bool = True, verbose: bool = False) -> LMText:
    """Sample ``n_samples`` continuations of every opening phrase of every topic with ``model`` (a
    TransformerLens bridge with a tokenizer, e.g. ``probe.zoo.load("smollm2-135m")``), or read them from the
    cache.

    Prompts are tokenised without BOS and batched by token length (no padding); each batch is sampled with
    the key/value cache under its own seed (``seed``, the batch's prompt length and index), exactly
    ``max_new_tokens`` new tokens per text (the end-of-text token is not a stop). The result depends on the
    torch version and machine only through floating-point sampling; the cache keeps the texts with their seed.

    Args:
        model: the language model.
        n_samples: continuations per opening phrase.
        max_new_tokens: tokens sampled per text.
        temperature, top_p: sampling settings.
        seed: the sampling seed.
        batch_size: texts sampled together.
        topics: opening phrases per topic (default :data:`TOPICS`).
        cache: the cache folder (default ``probe.core.paths.cache_dir()``); the file is
            ``lmtext/<model>-<hash of the settings>.json``.
        use_cache: read and write the cache (``False``: always sample, write nothing).
        verbose: a progress bar.

    Returns:
        An :class:`LMText` in topic, prompt and sample order.

    Raises:
        ModelError: the model has no tokenizer. InvalidParameterError: bad sizes or sampling settings.

    Example:
        >>> corpus = build_corpus(probe.zoo.load("smollm2-135m"), n_samples=4)   # doctest: +SKIP
        >>> len(corpus), corpus.topic_names[:2]                                   # doctest: +SKIP
        (320, ['animals', 'cooking'])
    """
    from tqdm.auto import tqdm

    for name, value in (("n_samples", n_samples), ("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidParameterError(f"{name} must be an int >= 1; got {value!r}")
    if not temperature > 0 or not 0 < top_p <= 1:
        raise InvalidParameterError(f"temperature must be > 0 and top_p in (0, 1]; got {temperature}, {top_p}")
    if getattr(model, "tokenizer", None) is None:
        raise ModelError("build_corpus needs a TransformerLens model with a tokenizer, e.g. "
                         "probe.zoo.load('smollm2-135m')")
    topics = {t: tuple(ps) for t, ps in (topics or TOPICS).items()}
    model_name = str(getattr(model.cfg, "model_name", type(model).__name__))
    settings = {"n_samples": n_samples, "max_new_tokens": max_new_tokens, "temperature": temperature,
                "top_p": top_p, "seed": seed, "batch_size": batch_size, "sampler": "kv-cache/v1"}
    path = cache_dir(cache) / "lmtext" / f"{model_name.replace('/', '--')}-{_corpus_key(model_name, topics, settings)}.json"
    if use_cache and path.is_file():
        logger.info("reading the cached corpus %s", path)
        return LMText.load(path)

    jobs = [(t, p, s) for t, ps in topics.items() for p in ps for s in range(n_samples)]
    prompt_ids = {p: model.to_tokens(p, prepend_bos=False)[0].tolist() for _, p, _ in jobs}
    by_len: dict[int, list[int]] = {}
    for j, (_, p, _) in enumerate(jobs):
        by_len.setdefault(len(prompt_ids[p]), []).append(j)
    batches = [(length, idx[i:i + batch_size]) for length, idx in sorted(by_len.items())
               for i in range(0, len(idx), batch_size)]
    out_tokens: dict[int, list[int]] = {}
    device = next(model.parameters()).device
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        for b, (length, idx) in enumerate(tqdm(batches, desc="sample corpus", disable=not verbose)):
            prompt = torch.tensor([prompt_ids[jobs[j][1]] for j in idx], dtype=torch.long, device=device)
            with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
                torch.manual_seed(seed * 1_000_003 + length * 1009 + b)
                out = model.generate(prompt, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                     top_p=top_p, stop_at_eos=False, use_past_kv_cache=True, verbose=False,
                                     return_type="tokens")
            for row, j in zip(out.tolist(), idx, strict=True):
                out_tokens[j] = row
    finally:
        model.train(was_training)
    tok = model.tokenizer
    texts, conts, lens, toks = [], [], [], []
    for j, (_, p, _) in enumerate(jobs):
        ids = out_tokens[j]
        n_prompt = len(prompt_ids[p])
        texts.append(tok.decode(ids))
        conts.append(tok.decode(ids[n_prompt:]))
        lens.append(n_prompt)
        toks.append(ids)
    seconds = time.perf_counter() - start
    corpus = LMText(texts, conts, [p for _, p, _ in jobs], [t for t, _, _ in jobs], toks, lens,
                    {**settings, "model": model_name, "seconds": round(seconds, 1)})
    logger.info("sampled %d texts in %.0f s", len(corpus), seconds)
    if use_cache:
        corpus.save(path)
    return corpus
