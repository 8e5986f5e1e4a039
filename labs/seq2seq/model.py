"""Sequence to sequence with attention (Sutskever et al., 2014; Bahdanau et al., 2015).

A Bi-LSTM encoder reads the problem; an LSTM decoder writes the program one token at a time,
attending (additive, Bahdanau) to the encoder's states. Parameter names are fixed (the grader
loads its weights by them):
encoder.{embedding, lstm, bridge_h, bridge_c}, decoder.{embedding, cell, attention.{query, key,
v}, out}.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

PAD, BOS, EOS = 0, 1, 2


@dataclass
class Seq2SeqConfig:
    src_vocab: int = 120
    tgt_vocab: int = 30
    emb_dim: int = 32
    enc_hidden: int = 64    # H_e, each direction of the encoder
    dec_hidden: int = 64    # H_d, the decoder
    attn_dim: int = 64      # A, additive attention's width
    attention: bool = True  # False: the decoder sees only the encoder's final state


class Encoder(nn.Module):
    """Embedding -> bidirectional LSTM over the real tokens (padding excluded) -> the decoder's
    first state.

    The forward LSTM's final state is its state at the last real token; the backward LSTM reads
    the sequence from the last real token down to the first, so its final state is its state at
    position 0. With f = [h_fwd; h_bwd] and g = [c_fwd; c_bwd] (each (B, 2 H_e)):
        h0 = tanh(bridge_h(f)),   c0 = bridge_c(g)
    """

    def __init__(self, vocab: int, emb_dim: int, hidden: int, dec_hidden: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb_dim, padding_idx=PAD)
        self.lstm = nn.LSTM(emb_dim, hidden, batch_first=True, bidirectional=True)
        self.bridge_h = nn.Linear(2 * hidden, dec_hidden)
        self.bridge_c = nn.Linear(2 * hidden, dec_hidden)

    def forward(self, src: torch.Tensor, lengths: torch.Tensor):  # src: (B, S), lengths: (B,)
        """Return outputs (B, S, 2 H_e), zero at padded positions, and (h0, c0), each (B, H_d)."""
        # TODO(seq2seq.encoder): embed, pack (pack_padded_sequence, enforce_sorted=False) so the
        #   LSTM never reads padding, unpack to length S; combine the final states of both
        #   directions (h_n[0] forward, h_n[1] backward) and apply the bridges.
        raise NotImplementedError('TODO(seq2seq.encoder): embed, pack (pack_padded_sequence, enforce_sorted=False) so the LSTM never reads padding, unpack to length S; combine the final states of both directions (h_n[0] forward, h_n[1] backward) and apply the bridges.')


class AdditiveAttention(nn.Module):
    """Bahdanau attention of a query s (B, H_q) over keys h_j (B, S, H_k):
        e_j = v^T tanh(W_q s + W_k h_j + b_k),  a = softmax(e) over the real positions j,
        context = sum_j a_j h_j
    Padded positions (mask False) get weight exactly 0.
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.query = nn.Linear(query_dim, attn_dim, bias=False)
        self.key = nn.Linear(key_dim, attn_dim)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor):
        """query (B, H_q), keys (B, S, H_k), mask (B, S) bool (True: a real token).
        Return context (B, H_k) and weights (B, S)."""
        # TODO(seq2seq.attention): the scores e (B, S); -inf where mask is False; softmax over S;
        #   the weighted sum of the keys.
        raise NotImplementedError('TODO(seq2seq.attention): the scores e (B, S); -inf where mask is False; softmax over S; the weighted sum of the keys.')


class Decoder(nn.Module):
    """One LSTMCell step per output token.

    With attention: context c from the previous hidden state h (Bahdanau),
        (h', c') = cell([embedding(y); c], (h, c)),   logits = out([h'; c])
    without: (h', c') = cell(embedding(y), (h, c)),    logits = out(h').
    """

    def __init__(self, vocab: int, emb_dim: int, hidden: int, enc_dim: int, attn_dim: int,
                 attention: bool = True):
        super().__init__()
        ctx = enc_dim if attention else 0
        self.embedding = nn.Embedding(vocab, emb_dim, padding_idx=PAD)
        self.attention = AdditiveAttention(hidden, enc_dim, attn_dim) if attention else None
        self.cell = nn.LSTMCell(emb_dim + ctx, hidden)
        self.out = nn.Linear(hidden + ctx, vocab)

    def step(self, token: torch.Tensor, state, enc_out: torch.Tensor, mask: torch.Tensor):
        """token (B,) long, state (h, c) each (B, H_d), enc_out (B, S, 2 H_e), mask (B, S).
        Return logits (B, V), the new state (h', c'), and the attention weights (B, S) (None
        without attention)."""
        # TODO(seq2seq.decoder_step): embed the token; with attention, attend with the previous
        #   h and feed [embedding; context] to the cell, then out([h'; context]); without, feed
        #   the embedding alone and return out(h').
        raise NotImplementedError("TODO(seq2seq.decoder_step): embed the token; with attention, attend with the previous h and feed [embedding; context] to the cell, then out([h'; context]); without, feed the embedding alone and return out(h').")


class Seq2Seq(nn.Module):
    """Encoder + decoder; forward computes the training logits with teacher forcing."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        c = self.config = config
        self.encoder = Encoder(c.src_vocab, c.emb_dim, c.enc_hidden, c.dec_hidden)
        self.decoder = Decoder(c.tgt_vocab, c.emb_dim, c.dec_hidden, 2 * c.enc_hidden, c.attn_dim,
                               c.attention)

    def forward(self, src: torch.Tensor, lengths: torch.Tensor, tgt: torch.Tensor,
                teacher_forcing: float = 1.0) -> torch.Tensor:
        """src (B, S), lengths (B,), tgt (B, T) starting with BOS. Return logits (B, T-1, V):
        step t predicts tgt[:, t+1].

        Step 0's input is tgt[:, 0]. Step t >= 1's input, for each example on its own: in train
        mode the true token tgt[:, t] with probability p = teacher_forcing (torch.rand(B) < p),
        else the argmax of step t-1's logits; in eval mode always the argmax (no teacher
        forcing at evaluation)."""
        # TODO(seq2seq.teacher_forcing): encode; mask = positions < lengths; loop over the T-1
        #   steps with self.decoder.step, choosing each next input as described.
        raise NotImplementedError('TODO(seq2seq.teacher_forcing): encode; mask = positions < lengths; loop over the T-1 steps with self.decoder.step, choosing each next input as described.')
