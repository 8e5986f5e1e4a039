"""The seq2seq lab's checks: plausible mistakes lose points in the named task with a message that
helps, and correct code written differently gets full marks."""
import pytest

from conftest import by_task, grade_task

PACK = """        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, c) = self.lstm(packed)                                      # h, c: (2, B, H_e)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])  # (B, S, 2H_e)
"""
H0 = "h0 = torch.tanh(self.bridge_h(torch.cat([h[0], h[1]], dim=-1)))"
ATTN = """        scores = self.v(torch.tanh(self.query(query)[:, None] + self.key(keys))).squeeze(-1)  # (B, S)
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1)                                     # (B, S)
        context = (weights[:, :, None] * keys).sum(dim=1)                    # (B, H_k)
"""
CELL = "h, c = self.cell(torch.cat([emb, context], dim=-1), (h, c))"
CHOICE = "token = torch.where(use_truth, tgt[:, t + 1], step_logits.argmax(-1))"
GREEDY = """        out.append(torch.where(done, torch.full_like(token, PAD), token))
        done = done | (token == EOS)
"""
TRY = """        try:
            value = execute(program, nums)
        except ProgramError:
            continue
"""

MISTAKES = {
    # name: (task, file, old, new, words the message must contain)
    "backward direction's last state instead of its first": (
        "seq2seq.encoder", "model.py", H0,
        "h0 = torch.tanh(self.bridge_h(out[torch.arange(len(src)), lengths - 1]))",
        "backward direction's state at the last position"),
    "padding fed to the LSTM": (
        "seq2seq.encoder", "model.py", PACK, "        out, (h, c) = self.lstm(emb)\n",
        "padding fed to the LSTM"),
    "directions concatenated backward first": (
        "seq2seq.encoder", "model.py", H0,
        "h0 = torch.tanh(self.bridge_h(torch.cat([h[1], h[0]], dim=-1)))", "backward first"),
    "no tanh on h0": (
        "seq2seq.encoder", "model.py", H0, "h0 = self.bridge_h(torch.cat([h[0], h[1]], dim=-1))",
        "no tanh on h0"),
    "encoder outputs detached": (
        "seq2seq.encoder", "model.py", "        return out, (h0, c0)\n",
        "        return out.detach(), (h0, c0)\n", "gradient"),
    "attention without the padding mask": (
        "seq2seq.attention", "model.py", '        scores = scores.masked_fill(~mask, float("-inf"))\n', "",
        "without the padding mask"),
    "attention softmax over the batch": (
        "seq2seq.attention", "model.py", "weights = scores.softmax(dim=-1)", "weights = scores.softmax(dim=0)",
        "weights"),
    "attention without tanh": (
        "seq2seq.attention", "model.py", "self.v(torch.tanh(self.query(query)[:, None] + self.key(keys)))",
        "self.v(self.query(query)[:, None] + self.key(keys))", "scores without tanh"),
    "decoder state passed as (c, h)": (
        "seq2seq.decoder_step", "model.py", CELL,
        "h, c = self.cell(torch.cat([emb, context], dim=-1), (c, h))", "(c, h) instead of (h, c)"),
    "decoder output from [context; h']": (
        "seq2seq.decoder_step", "model.py", "self.out(torch.cat([h, context], dim=-1))",
        "self.out(torch.cat([context, h], dim=-1))", "[context; h']"),
    "decoder context from the new hidden state": (
        "seq2seq.decoder_step", "model.py",
        "        return self.out(torch.cat([h, context], dim=-1)), (h, c), weights   # (B, V)\n",
        "        context, weights = self.attention(h, enc_out, mask)\n"
        "        return self.out(torch.cat([h, context], dim=-1)), (h, c), weights\n",
        "context taken from the new hidden state"),
    "decoder without attention returns weights of zeros": (
        "seq2seq.decoder_step", "model.py", "return self.out(h), (h, c), None",
        "return self.out(h), (h, c), torch.zeros(len(h))", "must return None"),
    "teacher forcing still on at evaluation": (
        "seq2seq.teacher_forcing", "model.py", "p = teacher_forcing if self.training else 0.0",
        "p = teacher_forcing", "still on at evaluation"),
    "always the true token": (
        "seq2seq.teacher_forcing", "model.py", CHOICE, "token = tgt[:, t + 1]",
        "with teacher_forcing = 0, step 1 must be fed the argmax"),
    "the true token one step late": (
        "seq2seq.teacher_forcing", "model.py", CHOICE,
        "token = torch.where(use_truth, tgt[:, t], step_logits.argmax(-1))", "must be fed the true token"),
    "one coin for the whole batch": (
        "seq2seq.teacher_forcing", "model.py", "use_truth = torch.rand(len(token), device=src.device) < p",
        "use_truth = (torch.rand(1, device=src.device) < p).expand(len(token))", "with teacher_forcing = 0."),
    "greedy continues after EOS": (
        "seq2seq.greedy", "decode.py", "        out.append(torch.where(done, torch.full_like(token, PAD), token))\n",
        "        out.append(token)\n", "continued after EOS"),
    "greedy drops the EOS": (
        "seq2seq.greedy", "decode.py", GREEDY,
        "        done = done | (token == EOS)\n        out.append(torch.where(done, torch.full_like(token, PAD), token))\n",
        "EOS replaced by PAD too"),
    "beam search without length normalisation": (
        "seq2seq.beam_search", "decode.py", "return total / len(seq) ** alpha", "return total",
        "no length normalisation"),
    "beam search drops finished hypotheses": (
        "seq2seq.beam_search", "decode.py", "finished.append((score(seq, value), seq))", "pass",
        "finished hypotheses (ending in EOS) were dropped"),
    "beam search keeps extending finished hypotheses": (
        "seq2seq.beam_search", "decode.py", "            if tok == EOS:\n", "            if False:\n",
        "beam search"),
    "metrics that stop at a program that cannot run": (
        "seq2seq.metrics", "metrics.py", TRY, "        value = execute(program, nums)\n",
        "catch vislab.data.mathqa.ProgramError"),
    "exact match without normalising": (
        "seq2seq.metrics", "metrics.py", "normalise(p) == normalise(g)", "p == g", "exact_match gave"),
    "execution accuracy over the executable programs only": (
        "seq2seq.metrics", "metrics.py", "        except ProgramError:\n            continue\n",
        "        except ProgramError:\n            answers = answers[:-1]\n            continue\n",
        "execution_accuracy with rel_tol"),
}



@pytest.fixture
def without_training_check(monkeypatch):
    """The mistakes are caught by the quick checks; the training run (seconds) is left out of
    these cases to keep the suite fast (the alternatives and test_grading still run it)."""
    from vislab.grading import load_lab
    lab = load_lab("seq2seq")
    monkeypatch.setattr(lab, "checks", [c for c in lab.checks if c.name != "trains_on_generated_problems"])


@pytest.mark.parametrize("name", by_task(MISTAKES))
def test_mistake_loses_points_with_a_helpful_message(name, make_variant, without_training_check):
    task, file, old, new, words = MISTAKES[name]
    row = grade_task("seq2seq", make_variant("seq2seq", {file: [(old, new)]}), task)
    assert row["status"] in ("failed", "error"), row
    assert row["earned"] < row["possible"]
    assert words in row["message"], row["message"]


# ------------------------------------------------------------ correct, written differently

BEAM = '''    enc_out, state = model.encoder(src, lengths)                             # (1, S, 2H_e)
    mask = torch.arange(src.shape[1], device=src.device)[None] < lengths[:, None]  # (1, S)
    tokens = [[]]                                                            # active hypotheses
'''
BEAM_REST_START = "    logp = torch.zeros(1, dtype=torch.float64)                               # (K,)\n"

ALTERNATIVES = {
    "encoder final states read from the outputs": ("seq2seq.encoder", "model.py", [(
        H0, "B, H = len(src), h.shape[-1]\n"
            "        last = torch.cat([out[torch.arange(B), lengths - 1, :H], out[:, 0, H:]], -1)\n"
            "        h0 = torch.tanh(self.bridge_h(last))")]),
    "attention with einsum, where and bmm": ("seq2seq.attention", "model.py", [(ATTN, """\
        q = self.query(query)
        e = torch.einsum("bsa,a->bs", torch.tanh(q[:, None, :] + self.key(keys)), self.v.weight[0])
        e = torch.where(mask, e, torch.tensor(float("-inf")))
        weights = torch.softmax(e, 1)
        context = torch.bmm(weights[:, None], keys)[:, 0]
""")]),
    "decoder with the LSTM gates written out": ("seq2seq.decoder_step", "model.py", [(CELL, """\
x = torch.cat((emb, context), 1)
        gates = (x @ self.cell.weight_ih.T + self.cell.bias_ih + h @ self.cell.weight_hh.T
                 + self.cell.bias_hh)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()""")]),
    "teacher forcing with bernoulli and an early return in eval mode": ("seq2seq.teacher_forcing", "model.py", [
        ("p = teacher_forcing if self.training else 0.0", "p = float(teacher_forcing)\n"
         "        if not self.training:\n            p = 0.0"),
        ("use_truth = torch.rand(len(token), device=src.device) < p",
         "use_truth = torch.bernoulli(torch.full((len(token),), p)).bool()")]),
    "greedy with PAD written after the loop": ("seq2seq.greedy", "decode.py", [(GREEDY, """\
        out.append(token)
    out = torch.stack(out, 1)
    after = (out == EOS).long().cumsum(1) - (out == EOS).long()
    return out.masked_fill(after > 0, PAD)
""")]),
    "beam search one hypothesis at a time": ("seq2seq.beam_search", "decode.py", [(
        BEAM, BEAM.replace("    tokens = [[]]                                                            # active hypotheses\n", "") + '''\
    beam = [([], 0.0, state)]
    finished = []
    for _ in range(max_len):
        candidates = []
        for seq, total, st in beam:
            token = torch.tensor([seq[-1] if seq else bos])
            logits, new_st, _ = model.decoder.step(token, st, enc_out, mask)
            logp = torch.log_softmax(logits[0].double(), -1)
            for tok in range(len(logp)):
                candidates.append((total + logp[tok].item(), seq + [tok], new_st))
        candidates.sort(key=lambda x: -x[0])
        beam = []
        for total, seq, st in candidates[:beam_size]:
            if seq[-1] == EOS:
                finished.append((total / len(seq) ** alpha, seq))
            else:
                beam.append((seq, total, st))
        if not beam:
            break
    finished += [(total / len(seq) ** alpha, seq) for seq, total, _ in beam]
    best = max(finished, key=lambda f: f[0])
    return best[1], best[0]
    tokens = [[]]
''')]),
    "metrics with a helper and a generator": ("seq2seq.metrics", "metrics.py", [(TRY, """\
        def run():
            try:
                return execute(program, nums)
            except ProgramError:
                return None
        value = run()
        if value is None:
            continue
""")]),
}


@pytest.mark.parametrize("name", by_task(ALTERNATIVES))
def test_correct_alternative_gets_full_marks(name, make_variant):
    task, file, edits = ALTERNATIVES[name]
    row = grade_task("seq2seq", make_variant("seq2seq", {file: edits}), task)
    assert row["status"] == "passed", row
    assert row["earned"] == row["possible"]


# --------------------------------------------------------------- the given BERT encoder

def test_bert_encoder_with_a_tiny_random_bert():
    """BertEncoder on a tiny randomly initialised BertModel (from a BertConfig, no download):
    states zero at padding, the decoder attends to them, frozen BERT gets no gradient."""
    transformers = pytest.importorskip("transformers")
    import torch

    from vislab import SOLUTIONS_DIR
    from vislab.impl import import_lab

    lab = import_lab(SOLUTIONS_DIR / "seq2seq")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=12, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=16, max_position_embeddings=32)
    src = torch.randint(1, 40, (3, 7))
    lengths = torch.tensor([7, 2, 5])
    tgt = torch.randint(3, 9, (3, 5))
    tgt[:, 0] = 1
    for freeze in (True, False):
        bert = transformers.BertModel(config)
        model = lab.bert.bert_seq2seq(bert, lab.model.Seq2SeqConfig(tgt_vocab=9, emb_dim=6, dec_hidden=10,
                                                                    attn_dim=4), freeze).train()
        out, (h0, c0) = model.encoder(src, lengths)
        assert out.shape == (3, 7, 12) and h0.shape == c0.shape == (3, 10)
        assert (out[1, 2:] == 0).all() and (out[2, 5:] == 0).all()
        assert model.encoder.bert.training is not freeze
        logits = model(src, lengths, tgt, teacher_forcing=1.0)
        assert logits.shape == (3, 4, 9)
        logits.sum().backward()
        bert_grads = [p.grad for p in model.encoder.bert.parameters()]
        assert all(g is None for g in bert_grads) if freeze else any(g is not None for g in bert_grads)
        assert model.encoder.bridge_h.weight.grad is not None


def test_train_options_and_missing_mathqa_are_one_line(tmp_path, monkeypatch, capsys):
    from vislab.cli import main
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path / "nothing"))
    assert main(["train", "seq2seq", "--impl", "solutions", "--tf", "2", "--out", str(tmp_path / "a")]) == 2
    assert "--tf: probabilities must lie in [0, 1]" in capsys.readouterr().err
    assert main(["train", "seq2seq", "--impl", "solutions", "--full", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "MathQA.zip from https://math-qa.github.io/" in err and "Traceback" not in err


def test_glove_rows_initialise_the_embeddings_and_a_missing_file_is_one_line(tmp_path):
    import argparse

    import torch

    from vislab import SOLUTIONS_DIR
    from vislab.data import mathqa
    from vislab.impl import import_lab

    lab = import_lab(SOLUTIONS_DIR / "seq2seq")
    sv, tv = mathqa.Vocab(["the", "shop", "n0"]), mathqa.Vocab(["add", "n0"])
    model = lab.model.Seq2Seq(lab.model.Seq2SeqConfig(src_vocab=len(sv), tgt_vocab=len(tv), emb_dim=3))
    glove = tmp_path / "glove.6B.3d.txt"
    glove.write_text("the 0.1 0.2 0.3\nadd 1 2 3\nshop 4 5\nzebra 7 8 9\n")  # shop: wrong width, skipped
    before = model.encoder.embedding.weight.detach().clone()
    note = lab.train.init_glove(model, argparse.Namespace(glove=glove, emb_dim=3), sv, tv)
    assert str(glove) in note
    enc, dec = model.encoder.embedding.weight, model.decoder.embedding.weight
    torch.testing.assert_close(enc[sv.stoi["the"]], torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(dec[tv.stoi["add"]], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(enc[sv.stoi["shop"]], before[sv.stoi["shop"]])
    missing = lab.train.init_glove(model, argparse.Namespace(glove=tmp_path / "no.txt", emb_dim=3), sv, tv)
    assert "no " in missing and "random embeddings" in missing and "\n" not in missing
