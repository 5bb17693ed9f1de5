"""The TokFSM language of "Codebook Features" (Tamkin et al., 2023): a random finite-state machine and its
token sequences.

A random FSM with 100 states, each with 10 out-neighbours drawn uniformly without replacement (self-loops
allowed) and uniform transition probabilities, seed 42. A state is written as its two base-10 digits
(state 7 -> tokens ``0 7``); token 10 is BOS/EOS/PAD. A sequence is 64 states (128 tokens) with BOS
prepended, so a model with a context of 128 learns to predict tokens 1..128 from tokens 0..127.
The models trained on it live in :mod:`probe.zoo.tokfsm`.

Example:
    >>> from probe.data.tokfsm import TokFSM
    >>> fsm = TokFSM()
    >>> tokens = fsm.sample(2, seed=0)
    >>> tuple(tokens.shape), int(tokens[0, 0])
    ((2, 129), 10)
    >>> bool(fsm.is_valid(fsm.state_sequence(tokens[0])[:-1], fsm.state_sequence(tokens[0])[1:]).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from probe.core.errors import InvalidParameterError

__all__ = ["BOS", "VOCAB_SIZE", "TokFSM", "TokFSMConfig"]

BOS = 10
VOCAB_SIZE = 11



@dataclass(frozen=True)
class TokFSMConfig:
    """Settings of a TokFSM language (defaults: the paper's)."""

    n_states: int = 100
    n_edges: int = 10
    seq_states: int = 64
    seed: int = 42

    def __post_init__(self) -> None:
        if not 1 <= self.n_states <= 100:
            raise InvalidParameterError(
                f"n_states must be in [1, 100] (two digit tokens per state); got {self.n_states}")
        if not 1 <= self.n_edges <= self.n_states:
            raise InvalidParameterError(f"n_edges must be in [1, n_states={self.n_states}]; got {self.n_edges}")
        if self.seq_states < 2:
            raise InvalidParameterError(f"seq_states must be >= 2; got {self.seq_states}")


class TokFSM:
    """A random finite-state machine and its token language.

    Args:
        config: the FSM's size, sequence length and seed.

    Attributes:
        successors: ``LongTensor [n_states, n_edges]``, sorted successor ids of every state.
        valid: ``BoolTensor [n_states, n_states]``, ``valid[a, b]`` iff ``b`` is a successor of ``a``.
        transition: ``FloatTensor [n_states, n_states]``, the row-stochastic transition matrix.

    Example:
        >>> fsm = TokFSM()
        >>> fsm.successors.shape
        torch.Size([100, 10])
        >>> fsm.encode(torch.tensor([7, 42])).tolist()
        [0, 7, 4, 2]
    """

    def __init__(self, config: TokFSMConfig | None = None) -> None:
        self.config = config or TokFSMConfig()
        c = self.config
        gen = torch.Generator().manual_seed(c.seed)
        succ = torch.stack([torch.randperm(c.n_states, generator=gen)[: c.n_edges] for _ in range(c.n_states)])
        self.successors = succ.sort(dim=1).values
        self.valid = torch.zeros(c.n_states, c.n_states, dtype=torch.bool)
        self.valid.scatter_(1, self.successors, True)
        self.transition = self.valid.float() / c.n_edges

    @property
    def seq_tokens(self) -> int:
        """Tokens per sequence including BOS (129 for the paper's settings)."""
        return 1 + 2 * self.config.seq_states

    def sample_states(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` state sequences of ``seq_states`` states, first state uniform. ``LongTensor [n, seq_states]``."""
        if n < 1:
            raise InvalidParameterError(f"n must be >= 1; got {n}")
        c = self.config
        gen = torch.Generator().manual_seed(seed)
        states = torch.empty(n, c.seq_states, dtype=torch.long)
        states[:, 0] = torch.randint(c.n_states, (n,), generator=gen)
        picks = torch.randint(c.n_edges, (n, c.seq_states - 1), generator=gen)
        for t in range(1, c.seq_states):
            states[:, t] = self.successors[states[:, t - 1], picks[:, t - 1]]
        return states

    def encode(self, states: torch.Tensor) -> torch.Tensor:
        """States ``[..., S]`` -> digit tokens ``[..., 2S]`` (tens digit first; no BOS)."""
        states = torch.as_tensor(states, dtype=torch.long)
        return torch.stack([states // 10, states % 10], dim=-1).flatten(-2)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` token sequences: BOS then ``seq_states`` states of two digits. ``LongTensor [n, seq_tokens]``."""
        tokens = self.encode(self.sample_states(n, seed))
        return torch.cat([torch.full((n, 1), BOS, dtype=torch.long), tokens], dim=1)

    def state_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """For sequences that start with BOS: the id of the state each token belongs to, -1 at BOS.

        Positions 1-2 are the first state, 3-4 the second, and so on; a state whose digits include a BOS token
        (as a model may generate) gets -1.
        """
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        body = tokens[..., 1:]
        n = body.shape[-1] // 2
        pairs = body[..., : 2 * n].reshape(*body.shape[:-1], n, 2)
        ids = pairs[..., 0] * 10 + pairs[..., 1]
        ok = (pairs < 10).all(-1) & (ids < self.config.n_states)
        ids = torch.where(ok, ids, torch.full_like(ids, -1))
        out = torch.full_like(tokens, -1)
        out[..., 1 : 1 + 2 * n] = ids.repeat_interleave(2, dim=-1)
        return out

    def digit_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """0 at a state's first digit, 1 at its second, -1 at BOS (for sequences starting with BOS)."""
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        pos = torch.arange(tokens.shape[-1]).expand_as(tokens)
        return torch.where(pos == 0, torch.full_like(tokens, -1), (pos - 1) % 2)

    def state_sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        """The states of BOS-prefixed sequences, ``[..., n_states_in_seq]`` (-1 where not a valid state)."""
        return self.state_ids(tokens)[..., 1::2]

    def is_valid(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Whether ``a -> b`` is an edge, elementwise; -1 (invalid state) on either side is never valid."""
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        ok = (a >= 0) & (b >= 0)
        return ok & self.valid[a.clamp(min=0), b.clamp(min=0)]
