"""Training speed of the seq2seq lab's reference model against the library's fused LSTM path.

    python benchmarks/train_speed_seq2seq.py [--repeats 3]

One epoch of the generated MathQA-style problems (4,000, batch 64, AdamW, teacher forcing 1),
the same plain loop for both, median of --repeats epochs after a warm-up epoch, taking turns.
There is no maintained seq2seq-with-attention model in torch or torchvision; the nearest
library equivalent is the model without attention whose teacher-forced decoder is one nn.LSTM
call over the whole target (cuDNN / the fused CPU kernel), with the same weights' shapes. The
lab's model steps an nn.LSTMCell token by token, as teacher forcing with p < 1 and attention
require; the ratio says what that loop costs.
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from timing import alternating_medians, cpu_name, steps_seconds
from vislab import SOLUTIONS_DIR
from vislab.data import mathqa
from vislab.impl import import_lab


class FusedDecoderSeq2Seq(nn.Module):
    """The lab's encoder; the decoder as one nn.LSTM over tgt[:, :-1] (teacher forcing 1 only)."""

    def __init__(self, lab, config):
        super().__init__()
        self.encoder = lab.model.Encoder(config.src_vocab, config.emb_dim, config.enc_hidden,
                                         config.dec_hidden)
        self.embedding = nn.Embedding(config.tgt_vocab, config.emb_dim)
        self.lstm = nn.LSTM(config.emb_dim, config.dec_hidden, batch_first=True)
        self.out = nn.Linear(config.dec_hidden, config.tgt_vocab)

    def forward(self, src, lengths, tgt, teacher_forcing=1.0):
        _, (h0, c0) = self.encoder(src, lengths)
        out, _ = self.lstm(self.embedding(tgt[:, :-1]), (h0[None], c0[None]))  # (B, T-1, H_d)
        return self.out(out)


def epoch(model, data, batch_size=64):
    def loss(i):
        s, n, t = data.src[i:i + batch_size], data.lengths[i:i + batch_size], data.tgt[i:i + batch_size]
        logits = model(s, n, t, teacher_forcing=1.0)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t[:, 1:].reshape(-1), ignore_index=0)
    model.train()
    return steps_seconds(model.parameters(),
                         [lambda i=i: loss(i) for i in range(0, len(data.src), batch_size)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    records = mathqa.generated("train")
    sv, tv = mathqa.vocabularies(records)
    data = mathqa.encode(records, sv, tv)
    lab = import_lab(SOLUTIONS_DIR / "seq2seq")
    config = lab.model.Seq2SeqConfig(src_vocab=len(sv), tgt_vocab=len(tv), emb_dim=50, enc_hidden=64,
                                     dec_hidden=64, attn_dim=64, attention=False)
    models = {"vislab Seq2Seq, no attention (LSTMCell loop)": lab.model.Seq2Seq(config),
              "same, decoder as one fused nn.LSTM call": FusedDecoderSeq2Seq(lab, config),
              "vislab Seq2Seq with attention (no fused equivalent)":
                  lab.model.Seq2Seq(lab.model.Seq2SeqConfig(**{**config.__dict__, "attention": True}))}
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    med = dict(zip(models, alternating_medians([lambda m=m: epoch(m, data) for m in models.values()],
                                               args.repeats)))
    for k, m in models.items():
        print(f"{k:<55} {sum(p.numel() for p in m.parameters()):>8,} params {med[k]:>7.2f} s/epoch")
    names = list(models)
    print(f"ratio ours / fused: {med[names[0]] / med[names[1]]:.2f}x (budget 1.2x)")


if __name__ == "__main__":
    main()
