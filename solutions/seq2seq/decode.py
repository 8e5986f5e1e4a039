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
    ### BEGIN SOLUTION
    # TODO(seq2seq.greedy): encode, then max_len decoder steps; remember which examples have
    #   finished and write PAD after their EOS.
    enc_out, state = model.encoder(src, lengths)                             # (B, S, 2H_e)
    mask = torch.arange(src.shape[1], device=src.device)[None] < lengths[:, None]  # (B, S)
    token = torch.full((len(src),), bos, dtype=torch.long, device=src.device)  # (B,)
    done = torch.zeros(len(src), dtype=torch.bool, device=src.device)
    out = []
    for _ in range(max_len):
        logits, state, _ = model.decoder.step(token, state, enc_out, mask)  # (B, V)
        token = logits.argmax(-1)
        out.append(torch.where(done, torch.full_like(token, PAD), token))
        done = done | (token == EOS)
    return torch.stack(out, dim=1)                                           # (B, max_len)
    ### END SOLUTION


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
    ### BEGIN SOLUTION
    # TODO(seq2seq.beam_search): keep (tokens, log-prob, state) per active hypothesis; step
    #   them all (a batch of hypotheses, or one at a time); top beam_size over all extensions;
    #   move EOS ones to `finished` with their normalised score; pick the best at the end.
    enc_out, state = model.encoder(src, lengths)                             # (1, S, 2H_e)
    mask = torch.arange(src.shape[1], device=src.device)[None] < lengths[:, None]  # (1, S)
    tokens = [[]]                                                            # active hypotheses
    logp = torch.zeros(1, dtype=torch.float64)                               # (K,)
    finished = []

    def score(seq, total):
        return total / len(seq) ** alpha

    for _ in range(max_len):
        K = len(tokens)
        last = torch.tensor([seq[-1] if seq else bos for seq in tokens], device=src.device)  # (K,)
        logits, state, _ = model.decoder.step(last, state, enc_out.expand(K, -1, -1),
                                              mask.expand(K, -1))           # (K, V)
        V = logits.shape[-1]
        total = logp[:, None] + logits.double().log_softmax(-1)              # (K, V)
        best = total.flatten().topk(min(beam_size, K * V))
        keep, new_tokens, new_logp = [], [], []
        for value, index in zip(best.values.tolist(), best.indices.tolist()):
            k, tok = divmod(index, V)
            seq = tokens[k] + [tok]
            if tok == EOS:
                finished.append((score(seq, value), seq))
            else:
                keep.append(k)
                new_tokens.append(seq)
                new_logp.append(value)
        if not keep:
            tokens = []
            break
        index = torch.tensor(keep, device=src.device)
        state = (state[0][index], state[1][index])
        tokens, logp = new_tokens, torch.tensor(new_logp, dtype=torch.float64)
    finished += [(score(seq, value), seq) for seq, value in zip(tokens, logp.tolist())]
    best_score, best_seq = max(finished, key=lambda f: f[0])
    return best_seq, best_score
    ### END SOLUTION
