"""A pre-trained BERT as the encoder (given code): the decoder attends to BERT's token states.

Needs the `transformers` library (pip install -e '.[bert]') and a local Hugging Face BERT folder
(config.json, the weights, vocab.txt); nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from vislab.errors import UsageError


class BertEncoder(nn.Module):
    """BERT's last-layer token states (B, S, H_b), zero at padding, and the decoder's first state
    from the [CLS] state u: h0 = tanh(bridge_h(u)), c0 = bridge_c(u). With freeze=True BERT's
    weights get no gradient and BERT stays in eval mode (no dropout); only the bridges train."""

    def __init__(self, bert: nn.Module, dec_hidden: int, freeze: bool):
        super().__init__()
        self.bert, self.freeze = bert, freeze
        size = bert.config.hidden_size
        self.bridge_h = nn.Linear(size, dec_hidden)
        self.bridge_c = nn.Linear(size, dec_hidden)
        if freeze:
            self.bert.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.bert.eval()
        return self

    def forward(self, src: torch.Tensor, lengths: torch.Tensor):  # src: (B, S) BERT ids
        mask = torch.arange(src.shape[1], device=src.device)[None] < lengths[:, None].to(src.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            out = self.bert(input_ids=src, attention_mask=mask.long()).last_hidden_state  # (B, S, H_b)
        out = out * mask[..., None]
        cls = out[:, 0]                                                     # (B, H_b)
        return out, (torch.tanh(self.bridge_h(cls)), self.bridge_c(cls))


def load_bert(folder: Path):
    """(BertModel, tokenizer) from a local folder; a UsageError says what is missing."""
    try:
        from transformers import AutoTokenizer, BertModel
    except ImportError:
        raise UsageError("the BERT models need the transformers library: pip install -e '.[bert]'") from None
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise UsageError(f"no BERT checkpoint at {folder} (a local Hugging Face folder with config.json)")
    return BertModel.from_pretrained(folder, local_files_only=True), \
        AutoTokenizer.from_pretrained(folder, local_files_only=True)


def bert_seq2seq(bert: nn.Module, config, freeze: bool):
    """A Seq2Seq whose encoder is BERT: the decoder attends to H_b-wide states (enc_hidden = H_b/2
    gives the decoder that width)."""
    from dataclasses import replace

    from .model import Seq2Seq

    size = bert.config.hidden_size
    model = Seq2Seq(replace(config, enc_hidden=size // 2, attention=True))
    model.encoder = BertEncoder(bert, config.dec_hidden, freeze)
    return model


def bert_inputs(records: list[dict], tokenizer, max_len: int = 128):
    """Problems (numbers as n0, n1, ...) as BERT ids (N, S) and lengths (N,)."""
    from vislab.data import mathqa

    texts = [" ".join(mathqa.problem_tokens(r["Problem"])) for r in records]
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"].sum(1)
