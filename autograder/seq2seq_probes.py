"""Probes for the seq2seq lab: run the student's modules on the grader's weights and inputs.

Each probe returns plain values (outputs, gradients, the tokens fed to the decoder, trained
weights); autograder/seq2seq.py compares them with its references. The stand-ins below
(RefEncoder, RefAttention, RefDecoder: nn.LSTM / nn.LSTMCell and closed forms, the handout's
parameter names) replace another task's module inside a probe, so that one unfinished task does
not cost the next one its points. Nothing here is secret.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from vislab.probing import ProbeFailed, gradients, load_weights, returned

PAD, BOS, EOS = 0, 1, 2


# ------------------------------------------------------------------------------ stand-ins

class RefEncoder(nn.Module):
    """nn.LSTM(bidirectional) run on each example's real tokens alone (no padding at all)."""

    def __init__(self, vocab, emb_dim, hidden, dec_hidden):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb_dim)
        self.lstm = nn.LSTM(emb_dim, hidden, batch_first=True, bidirectional=True)
        self.bridge_h = nn.Linear(2 * hidden, dec_hidden)
        self.bridge_c = nn.Linear(2 * hidden, dec_hidden)

    def forward(self, src, lengths):
        B, S = src.shape
        H = self.lstm.hidden_size
        outs, hs, cs = [], [], []
        for b in range(B):
            n = int(lengths[b])
            out, (h, c) = self.lstm(self.embedding(src[b:b + 1, :n]))      # (1, n, 2H), (2, 1, H)
            outs.append(F.pad(out, (0, 0, 0, S - n)))
            hs.append(torch.cat([h[0], h[1]], -1))
            cs.append(torch.cat([c[0], c[1]], -1))
        h, c = torch.cat(hs), torch.cat(cs)                                  # (B, 2H)
        assert h.shape[-1] == 2 * H
        return torch.cat(outs), (torch.tanh(self.bridge_h(h)), self.bridge_c(c))


class RefAttention(nn.Module):
    """e = v^T tanh(W_q s + W_k h + b_k), masked softmax, weighted sum of the keys."""

    def __init__(self, query_dim, key_dim, attn_dim):
        super().__init__()
        self.query = nn.Linear(query_dim, attn_dim, bias=False)
        self.key = nn.Linear(key_dim, attn_dim)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, query, keys, mask):
        e = (torch.tanh(self.query(query)[:, None] + self.key(keys)) @ self.v.weight[0])  # (B, S)
        e = torch.where(mask, e, torch.full_like(e, float("-inf")))
        a = torch.softmax(e, dim=-1)
        return torch.einsum("bs,bsk->bk", a, keys), a


class RefDecoder(nn.Module):
    def __init__(self, vocab, emb_dim, hidden, enc_dim, attn_dim, attention=True):
        super().__init__()
        ctx = enc_dim if attention else 0
        self.embedding = nn.Embedding(vocab, emb_dim)
        self.attention = RefAttention(hidden, enc_dim, attn_dim) if attention else None
        self.cell = nn.LSTMCell(emb_dim + ctx, hidden)
        self.out = nn.Linear(hidden + ctx, vocab)

    def step(self, token, state, enc_out, mask):
        emb = self.embedding(token)
        if self.attention is None:
            h, c = self.cell(emb, state)
            return self.out(h), (h, c), None
        context, weights = self.attention(state[0], enc_out, mask)
        h, c = self.cell(torch.cat([emb, context], -1), state)
        return self.out(torch.cat([h, context], -1)), (h, c), weights


class RefSeq2Seq(nn.Module):
    """The reference encoder and decoder under the handout's names (a grader's model)."""

    def __init__(self, c: dict):
        super().__init__()
        self.encoder = RefEncoder(c["src_vocab"], c["emb_dim"], c["enc_hidden"], c["dec_hidden"])
        self.decoder = RefDecoder(c["tgt_vocab"], c["emb_dim"], c["dec_hidden"], 2 * c["enc_hidden"],
                                  c["attn_dim"], c["attention"])


def sub_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class _Recording(nn.Module):
    """A decoder whose step records the tokens it is fed (the teacher-forcing check's material)."""

    def __init__(self, decoder):
        super().__init__()
        self.inner, self.fed = decoder, []

    def step(self, token, state, enc_out, mask):
        self.fed.append(returned(token, "the token given to decoder.step").detach().clone())
        return self.inner.step(token, state, enc_out, mask)


def reference_parts(model, config, state):
    """Put the stand-ins, holding the grader's weights, into the student's Seq2Seq."""
    ref = RefSeq2Seq(config)
    ref.load_state_dict(state)
    model.encoder, model.decoder = ref.encoder, ref.decoder
    return model


def build_model(lab, config, state):
    m = lab.model.Seq2Seq(lab.model.Seq2SeqConfig(**config))
    return load_weights(m, state, "Seq2Seq")


def _number(value, what):
    """A Python float from a number, a one-element tensor or a numpy scalar."""
    if isinstance(value, bool):
        raise ProbeFailed(f"{what} must return a number, got a bool")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if type(value).__module__ == "numpy" and getattr(value, "size", 0) == 1:
        return float(value.item())
    raise ProbeFailed(f"{what} must return a number, got {type(value).__name__}")


def _pair(value, what):
    if type(value) not in (tuple, list) or len(value) != 2:
        raise ProbeFailed(f"{what} must return a pair, got {type(value).__name__}")
    return value


# -------------------------------------------------------------------------------- probes

def encoder(lab, config, state, src, lengths, grads=None):
    c = config
    m = load_weights(lab.model.Encoder(c["src_vocab"], c["emb_dim"], c["enc_hidden"], c["dec_hidden"]),
                     state, "Encoder")
    out, hc = _pair(m(src, lengths), "Encoder.forward")
    h0, c0 = _pair(hc, "Encoder.forward's second value (h0, c0)")
    got = {"out": returned(out, "Encoder"), "h0": returned(h0, "Encoder"), "c0": returned(c0, "Encoder")}
    if grads is not None and all(got[k].shape == grads[k].shape for k in grads):
        if not got["h0"].requires_grad:
            raise ProbeFailed("Encoder's outputs carry no gradient (torch.no_grad or .detach()?)")
        sum((got[k] * grads[k]).sum() for k in grads).backward()
        got["grads"] = gradients(m)
    return got


def attention(lab, query_dim, key_dim, attn_dim, state, query, keys, mask, grad_context=None):
    m = load_weights(lab.model.AdditiveAttention(query_dim, key_dim, attn_dim), state, "AdditiveAttention")
    query, keys = query.clone().requires_grad_(), keys.clone().requires_grad_()
    context, weights = _pair(m(query, keys, mask), "AdditiveAttention.forward")
    got = {"context": returned(context, "AdditiveAttention"), "weights": returned(weights, "AdditiveAttention")}
    if grad_context is not None and context.shape == grad_context.shape and context.requires_grad:
        (context * grad_context).sum().backward()
        got.update(grads=gradients(m), query_grad=query.grad, keys_grad=keys.grad)
    return got


def decoder_step(lab, config, state, token, h, c, enc_out, mask, grad_logits=None):
    k = config
    m = lab.model.Decoder(k["tgt_vocab"], k["emb_dim"], k["dec_hidden"], 2 * k["enc_hidden"], k["attn_dim"],
                          k["attention"])
    load_weights(m, state, "Decoder")
    if k["attention"]:
        ref = RefAttention(k["dec_hidden"], 2 * k["enc_hidden"], k["attn_dim"])
        ref.load_state_dict(sub_state(state, "attention."))
        m.attention = ref
    result = m.step(token, (h, c), enc_out, mask)
    if type(result) not in (tuple, list) or len(result) != 3:
        raise ProbeFailed("Decoder.step must return (logits, (h, c), weights)")
    logits, (h1, c1), weights = result[0], _pair(result[1], "Decoder.step's state"), result[2]
    got = {"logits": returned(logits, "Decoder.step"), "h": returned(h1, "Decoder.step"),
           "c": returned(c1, "Decoder.step"), "weights": weights}
    if grad_logits is not None and logits.shape == grad_logits.shape and logits.requires_grad:
        (logits * grad_logits).sum().backward()
        got["grads"] = gradients(m)
    return got


def teacher_forcing(lab, config, state, src, lengths, tgt, p, train=True, seed=0):
    """The student's Seq2Seq.forward with the stand-ins inside; the logits and the tokens it
    fed to the decoder at every step."""
    m = reference_parts(build_model(lab, config, state), config, state)
    m.decoder = _Recording(m.decoder)
    m.train(train)
    torch.manual_seed(seed)
    logits = returned(m(src, lengths, tgt, teacher_forcing=p), "Seq2Seq.forward")
    return {"logits": logits, "fed": m.decoder.fed}


def greedy(lab, config, state, src, lengths, max_len):
    m = reference_parts(build_model(lab, config, state), config, state).eval()
    return {"tokens": returned(lab.decode.greedy_decode(m, src, lengths, BOS, max_len), "greedy_decode")}


def beam(lab, config, state, src, lengths, beam_size, max_len, alpha):
    m = reference_parts(build_model(lab, config, state), config, state).eval()
    tokens, score = _pair(lab.decode.beam_search(m, src, lengths, BOS, beam_size, max_len, alpha),
                          "beam_search")
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.tolist()
    return {"tokens": tokens, "score": _number(score, "beam_search's score")}


def metrics(lab, predicted, gold, numbers, answers, rel_tol):
    return {"exact": _number(lab.metrics.exact_match(predicted, gold), "exact_match"),
            "execution": _number(lab.metrics.execution_accuracy(predicted, numbers, answers, rel_tol),
                                 "execution_accuracy")}


def train_model(lab, config, src, lengths, tgt, seed, steps, batch_size, lr, p):
    """Train the student's whole Seq2Seq (its forward with teacher forcing p) with Adam on
    cross-entropy over the real target tokens; return the trained state_dict."""
    torch.manual_seed(seed)
    m = lab.model.Seq2Seq(lab.model.Seq2SeqConfig(**config))
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    m.train()
    for _ in range(steps):
        idx = torch.randint(0, len(src), (batch_size,))
        logits = returned(m(src[idx], lengths[idx], tgt[idx], teacher_forcing=p), "Seq2Seq.forward")
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[idx, 1:].reshape(-1),
                               ignore_index=PAD)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    return {k: v.detach().clone() for k, v in m.state_dict().items()}
