"""Decoding: greedy (the argmax at every step) and beam search with length normalisation."""
from __future__ import annotations

import torch

from .model import EOS, PAD


@torch.no_grad()
def greedy_decode(model, src: torch.Tensor, lengths: torch.Tensor, bos: int,
                  max_len: int) -> torch.Tensor:
    """The argmax token at each of max_len steps, starting from `bos`, each step's token fed
    to the next. Return (B, max_len): once an example has produced EOS (kept), its later
    positions are PAD."""
    # TODO(seq2seq.greedy): encode, then max_len decoder steps; remember which examples have
    #   finished and write PAD after their EOS.
    raise NotImplementedError('TODO(seq2seq.greedy): encode, then max_len decoder steps; remember which examples have finished and write PAD after their EOS.')


@torch.no_grad()
def beam_search(model, src: torch.Tensor, lengths: torch.Tensor, bos: int, beam_size: int,
                max_len: int, alpha: float = 1.0) -> tuple[list[int], float]:
    """The best program for one problem (src (1, S), lengths (1,)) by beam search.

    A hypothesis is the tokens y_1..y_L after `bos` with log-probability sum_t log p(y_t | y_<t);
    its score is that sum / L**alpha (length normalisation; alpha = 0: none).
    At each of max_len steps every active hypothesis is extended by every token of the
    vocabulary, and the beam_size extensions with the highest log-probability (over all of
    them) are kept. A kept extension ending in EOS is finished: it leaves the beam (and is never
    extended) but is kept among the finished; the others stay active. The search stops when
    no hypothesis is active or after max_len steps, when the active ones count as finished.
    Return the finished hypothesis with the best score: its tokens (EOS included when it has
    one) and its score."""
    # TODO(seq2seq.beam_search): keep (tokens, log-prob, state) per active hypothesis; step
    #   them all (a batch of hypotheses, or one at a time); top beam_size over all extensions;
    #   move EOS ones to `finished` with their normalised score; pick the best at the end.
    raise NotImplementedError('TODO(seq2seq.beam_search): keep (tokens, log-prob, state) per active hypothesis; step them all (a batch of hypotheses, or one at a time); top beam_size over all extensions; move EOS ones to `finished` with their normalised score; pick the best at the end.')
