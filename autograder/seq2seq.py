"""Checks for the seq2seq lab. Run them with `vislab grade seq2seq [--impl labs|solutions|PATH]`.

References: nn.LSTM run on each example's real tokens alone (bidirectional), nn.LSTMCell, the
closed form of additive attention, a float64 replay of the decoder on the tokens the student's
loop fed it, exhaustive search over every output sequence of a tiny model, and
vislab.data.mathqa.execute. Weights and inputs come from the generator `g` the grader seeds.
The reference modules (RefEncoder, RefDecoder, ...) are the public stand-ins of
seq2seq_probes.py, built here in the grader's process and run in float64.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislab.data import mathqa
from vislab.grading import Lab, expect, expect_close, expect_gradients, expect_shape
from vislab.probing import StudentError

from . import seq2seq_probes as probes
from .seq2seq_probes import BOS, EOS, PAD, RefSeq2Seq

lab = Lab("seq2seq", {
    "seq2seq.encoder": "Bi-LSTM encoder over the real tokens; final states -> decoder state",
    "seq2seq.attention": "additive (Bahdanau) attention with a padding mask",
    "seq2seq.decoder_step": "one LSTMCell step with attention",
    "seq2seq.teacher_forcing": "training forward: teacher forcing with probability p",
    "seq2seq.greedy": "greedy decoding, PAD after EOS",
    "seq2seq.beam_search": "beam search, finished hypotheses kept, length normalisation",
    "seq2seq.metrics": "exact match and execution accuracy",
})

# Small and all sizes different, so that mixed-up axes show.
CONFIG = dict(src_vocab=13, tgt_vocab=9, emb_dim=6, enc_hidden=5, dec_hidden=7, attn_dim=4,
              attention=True)
# Tiny, for exhaustive search: 5 output tokens (PAD, BOS, EOS and two more).
TINY = dict(src_vocab=7, tgt_vocab=5, emb_dim=4, enc_hidden=3, dec_hidden=5, attn_dim=4,
            attention=True)


def random_state(config: dict, g: torch.Generator, scale: float = 0.5) -> dict:
    """The grader's weights for a Seq2Seq of `config` under the handout's names (float32)."""
    ref = RefSeq2Seq(config)
    return {k: scale * torch.randn(v.shape, generator=g) for k, v in ref.state_dict().items()}


def reference(config: dict, state: dict) -> RefSeq2Seq:
    ref = RefSeq2Seq(config)
    ref.load_state_dict(state)
    return ref.double().eval()


def batch(g, config, lengths, S=None):
    """src (B, S) with random real tokens (never PAD) then PAD, lengths as given."""
    lengths = torch.tensor(lengths)
    S = S or int(lengths.max())
    src = torch.randint(3, config["src_vocab"], (len(lengths), S), generator=g)
    src[torch.arange(S)[None] >= lengths[:, None]] = PAD
    return src, lengths


def mask_of(src, lengths):
    return torch.arange(src.shape[1])[None] < lengths[:, None]


# -------------------------------------------------------------------------- seq2seq.encoder

def encoder_variants(ref, src, lengths):
    """What common mistakes give for h0, in float64."""
    enc = ref.encoder
    H = enc.lstm.hidden_size
    with torch.no_grad():
        out, _ = enc(src, lengths)
        B = len(src)
        fwd_last = out[torch.arange(B), lengths - 1, :H]
        bwd_at_last = out[torch.arange(B), lengths - 1, H:]
        _, (hp, _) = enc.lstm(enc.embedding(src))          # padding read as tokens
        bridge = lambda f: torch.tanh(enc.bridge_h(f))  # noqa: E731
        hs = []
        for b in range(B):
            n = int(lengths[b])
            _, (hb, _) = enc.lstm(enc.embedding(src[b:b + 1, :n]))
            hs.append(torch.cat([hb[1], hb[0]], -1))
        return {
            "the backward direction's state at the last position (its first step) instead of its "
            "final state, at position 0 (h_n[1], or outputs[:, 0, H:])":
                bridge(torch.cat([fwd_last, bwd_at_last], -1)),
            "padding fed to the LSTM (pack the sequence with pack_padded_sequence so each "
            "direction stops at the real tokens)": bridge(torch.cat([hp[0], hp[1]], -1)),
            "the directions concatenated backward first ([h_bwd; h_fwd] instead of [h_fwd; h_bwd])":
                bridge(torch.cat(hs)),
            "no tanh on h0": enc.bridge_h(torch.cat([fwd_last, out[:, 0, H:]], -1)),
        }


@lab.check("seq2seq.encoder", points=2)
def encoder_matches_lstm(student, g):
    """outputs, h0 and c0 equal nn.LSTM's run on each example's real tokens alone (unsorted
    lengths, one full, one of length 1; and a batch of 1), outputs zero at padding."""
    c = CONFIG
    for lengths, S in (([6, 3, 1, 5], 6), ([4], 7)):
        state = random_state(c, g)
        enc_state = probes.sub_state(state, "encoder.")
        src, lengths = batch(g, c, lengths, S)
        got = student.run(probes.encoder, config=c, state=enc_state, src=src, lengths=lengths)
        ref = reference(c, state)
        with torch.no_grad():
            out, (h0, c0) = ref.encoder(src, lengths)
        what = f"Encoder on lengths {lengths.tolist()} (S = {S})"
        expect_close(got["h0"], h0, f"{what}: h0", diagnoses=encoder_variants(ref, src, lengths))
        expect_close(got["c0"], c0, f"{what}: c0 (bridge_c of [c_fwd; c_bwd], no tanh)")
        expect_shape(got["out"], out.shape, f"{what}: outputs (B, S, 2 H_e), padded to S")
        pad = ~mask_of(src, lengths)
        expect(bool((got["out"][pad] == 0).all()), f"{what}: outputs at padded positions must be 0 "
               f"(pad_packed_sequence gives zeros there)")
        expect_close(got["out"], out, f"{what}: outputs")


@lab.check("seq2seq.encoder", points=1)
def encoder_gradients(student, g):
    """Gradients of every weight equal the reference's, for a loss on outputs, h0 and c0."""
    c = CONFIG
    state = random_state(c, g)
    enc_state = probes.sub_state(state, "encoder.")
    src, lengths = batch(g, c, [5, 2, 4])
    ref = reference(c, state)
    out, (h0, c0) = ref.encoder(src, lengths)
    grads = {"out": torch.randn(out.shape, generator=g), "h0": torch.randn(h0.shape, generator=g),
             "c0": torch.randn(c0.shape, generator=g)}
    got = student.run(probes.encoder, config=c, state=enc_state, src=src, lengths=lengths, grads=grads)
    ((out * grads["out"]).sum() + (h0 * grads["h0"]).sum() + (c0 * grads["c0"]).sum()).backward()
    want = {n: p.grad.float() for n, p in ref.encoder.named_parameters()}
    expect(got.get("grads") is not None, "Encoder: no gradients came back (wrong output shapes?)")
    expect_gradients(got["grads"], want, "Encoder")


# ------------------------------------------------------------------------ seq2seq.attention

def attention_setup(g, B=3, S=6, Hq=7, Hk=10, A=4):
    ref = probes.RefAttention(Hq, Hk, A)
    state = {k: 0.6 * torch.randn(v.shape, generator=g) for k, v in ref.state_dict().items()}
    ref.load_state_dict(state)
    query, keys = torch.randn(B, Hq, generator=g), torch.randn(B, S, Hk, generator=g)
    lengths = torch.tensor([S, 1] + [int(torch.randint(2, S, (1,), generator=g))] * (B - 2))[:B]
    return ref.double(), state, query, keys, mask_of(keys[..., 0], lengths)


@lab.check("seq2seq.attention", points=2)
def attention_closed_form(student, g):
    """context and weights equal v^T tanh(W_q s + W_k h + b) -> masked softmax -> sum a_j h_j;
    padded positions get weight exactly 0 (a full row, a row of length 1, a batch of 1)."""
    for B in (3, 1):
        ref, state, query, keys, mask = attention_setup(g, B=B)
        got = student.run(probes.attention, query_dim=7, key_dim=10, attn_dim=4, state=state,
                          query=query, keys=keys, mask=mask)
        q, k = query.double(), keys.double()
        with torch.no_grad():
            context, weights = ref(q, k, mask)
            e = torch.tanh(ref.query(q)[:, None] + ref.key(k)) @ ref.v.weight[0]
            no_mask = e.softmax(-1)
        what = f"AdditiveAttention (B = {B}, lengths {mask.sum(1).tolist()})"
        expect_close(got["weights"], weights, f"{what}: weights", diagnoses={
            "attention without the padding mask (padded positions get weight: set their scores to "
            "-inf before the softmax)": no_mask,
            "scores without tanh": (torch.where(mask, (ref.query(q)[:, None] + ref.key(k)) @ ref.v.weight[0],
                                                torch.tensor(float("-inf"), dtype=torch.float64))
                                    ).softmax(-1).detach(),
        })
        expect(bool((got["weights"][~mask] == 0).all()), f"{what}: padded positions must get weight "
                                                         f"exactly 0")
        expect_close(got["context"], context, f"{what}: context", diagnoses={
            "the context from the unmasked weights": torch.einsum("bs,bsk->bk", no_mask, k)})


@lab.check("seq2seq.attention", points=1)
def attention_gradients(student, g):
    """Gradients of the weights, the query and the keys equal the closed form's."""
    ref, state, query, keys, mask = attention_setup(g)
    grad = torch.randn(len(query), 10, generator=g)
    got = student.run(probes.attention, query_dim=7, key_dim=10, attn_dim=4, state=state,
                      query=query, keys=keys, mask=mask, grad_context=grad)
    q, k = query.double().requires_grad_(), keys.double().requires_grad_()
    context, _ = ref(q, k, mask)
    (context * grad.double()).sum().backward()
    expect(got.get("grads") is not None, "AdditiveAttention: no gradients came back (is the "
                                         "context detached, or of the wrong shape?)")
    expect_gradients(got["grads"], {n: p.grad.float() for n, p in ref.named_parameters()},
                     "AdditiveAttention")
    expect_close(got["query_grad"], q.grad, "AdditiveAttention: gradient of the query")
    expect_close(got["keys_grad"], k.grad, "AdditiveAttention: gradient of the keys (padded keys "
                                           "get none)")


# --------------------------------------------------------------------- seq2seq.decoder_step

def decoder_inputs(g, c, B=3):
    src, lengths = batch(g, c, [5, 2, 4][:B] if B > 1 else [3])
    state = random_state(c, g)
    dec_state = probes.sub_state(state, "decoder.")
    token = torch.randint(1, c["tgt_vocab"], (len(src),), generator=g)  # not PAD (padding_idx: no gradient)
    h, cc = torch.randn(len(src), c["dec_hidden"], generator=g), torch.randn(len(src), c["dec_hidden"], generator=g)
    enc_out = torch.randn(len(src), src.shape[1], 2 * c["enc_hidden"], generator=g)
    return state, dec_state, token, h, cc, enc_out, mask_of(src, lengths)


def decoder_variants(ref, token, h, c, enc_out, mask):
    d = ref.decoder
    emb = d.embedding(token)
    context, _ = d.attention(h, enc_out, mask)
    out = {}
    h1, _ = d.cell(torch.cat([emb, context], -1), (c, h))
    out["the state passed to the cell as (c, h) instead of (h, c)"] = d.out(torch.cat([h1, context], -1))
    h1, _ = d.cell(torch.cat([emb, context], -1), (h, c))
    out["[context; h'] fed to out instead of [h'; context]"] = d.out(torch.cat([context, h1], -1))
    ctx_new, _ = d.attention(h1, enc_out, mask)
    out["the logits' context taken from the new hidden state h' (the handout attends with the "
        "previous h, once per step)"] = d.out(torch.cat([h1, ctx_new], -1))
    return out


@lab.check("seq2seq.decoder_step", points=2)
def decoder_step_matches_lstmcell(student, g):
    """logits, h', c' equal nn.LSTMCell on [embedding; context(h)] and out([h'; context]), the
    grader's attention inside (also a batch of 1); gradients of the weights."""
    c = CONFIG
    for B in (3, 1):
        state, dec_state, token, h, cc, enc_out, mask = decoder_inputs(g, c, B)
        grad = torch.randn(len(token), c["tgt_vocab"], generator=g)
        got = student.run(probes.decoder_step, config=c, state=dec_state, token=token, h=h, c=cc,
                          enc_out=enc_out, mask=mask, grad_logits=grad)
        ref = reference(c, state)
        args = (token, (h.double(), cc.double()), enc_out.double(), mask)
        logits, (h1, c1), weights = ref.decoder.step(*args)
        with torch.no_grad():
            diagnoses = decoder_variants(ref, token, h.double(), cc.double(), enc_out.double(), mask)
        what = f"Decoder.step with attention (B = {B})"
        expect_close(got["logits"], logits.detach(), f"{what}: logits", diagnoses=diagnoses)
        expect_close(got["h"], h1.detach(), f"{what}: h'")
        expect_close(got["c"], c1.detach(), f"{what}: c'")
        expect(isinstance(got["weights"], torch.Tensor), f"{what} must return the attention weights "
                                                         f"as its third value")
        expect_close(got["weights"], weights.detach(), f"{what}: attention weights")
        (logits * grad.double()).sum().backward()
        want = {n: p.grad.float() for n, p in ref.decoder.named_parameters()
                if not n.startswith("attention.")}
        expect(got.get("grads") is not None, f"{what}: no gradients came back")
        expect_gradients({k: v for k, v in got["grads"].items() if not k.startswith("attention.")},
                         want, what)


@lab.check("seq2seq.decoder_step", points=1)
def decoder_step_without_attention(student, g):
    """attention=False: logits = out(h') with (h', c') = cell(embedding(y), (h, c)); weights None."""
    c = {**CONFIG, "attention": False}
    state, dec_state, token, h, cc, enc_out, mask = decoder_inputs(g, c)
    got = student.run(probes.decoder_step, config=c, state=dec_state, token=token, h=h, c=cc,
                      enc_out=enc_out, mask=mask)
    ref = reference(c, state)
    with torch.no_grad():
        logits, (h1, c1), _ = ref.decoder.step(token, (h.double(), cc.double()), enc_out.double(), mask)
    what = "Decoder.step without attention"
    expect_close(got["h"], h1, f"{what}: h'")
    expect_close(got["c"], c1, f"{what}: c'")
    expect_close(got["logits"], logits, f"{what}: logits (out(h'))")
    expect(got["weights"] is None, f"{what} must return None as its weights")


# ------------------------------------------------------------------ seq2seq.teacher_forcing

def replay(ref, src, lengths, fed):
    """The reference decoder's logits (B, len(fed), V), fed the given tokens; float64."""
    with torch.no_grad():
        enc_out, state = ref.encoder(src, lengths)
        mask = mask_of(src, lengths)
        out = []
        for token in fed:
            logits, state, _ = ref.decoder.step(token, state, enc_out, mask)
            out.append(logits)
        return torch.stack(out, 1)


def tf_run(student, g, p, train=True, B=4, T=6, lengths=None):
    c = CONFIG
    state = random_state(c, g)
    src, lengths = batch(g, c, lengths or [int(torch.randint(1, 7, (1,), generator=g)) for _ in range(B)])
    tgt = torch.randint(3, c["tgt_vocab"], (len(src), T), generator=g)
    tgt[:, 0] = BOS
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    got = student.run(probes.teacher_forcing, config=c, state=state, src=src, lengths=lengths, tgt=tgt,
                      p=p, train=train, seed=seed)
    ref = reference(c, state)
    logits = expect_shape(got["logits"], (len(src), T - 1, c["tgt_vocab"]),
                          "Seq2Seq.forward's logits (B, T-1, V)")
    fed = got["fed"]
    expect(len(fed) == T - 1, f"Seq2Seq.forward called decoder.step {len(fed)} times for T = {T}, "
                              f"expected T - 1 = {T - 1}")
    for t, token in enumerate(fed):
        expect_shape(token, (len(src),), f"the token fed to decoder.step at step {t}")
    expect(torch.equal(fed[0], tgt[:, 0]), "step 0's input must be tgt[:, 0] (BOS)")
    want = replay(ref, src, lengths, fed)
    expect_close(logits, want, "Seq2Seq.forward's logits (the decoder's outputs, stacked over steps)")
    return fed, want, tgt


@lab.check("seq2seq.teacher_forcing", points=2)
def teacher_forcing_p1_and_p0(student, g):
    """Train mode, p = 1: each step is fed the true token tgt[:, t]; p = 0: the argmax of the
    previous step's logits (checked against the reference decoder's, in float64)."""
    fed, want, tgt = tf_run(student, g, 1.0)
    for t in range(1, len(fed)):
        expect(torch.equal(fed[t], tgt[:, t]), f"with teacher_forcing = 1, step {t} must be fed the "
                                               f"true token tgt[:, {t}]", "no teacher forcing at p = 1")
    fed, want, tgt = tf_run(student, g, 0.0, lengths=[5, 1, 6])
    for t in range(1, len(fed)):
        expect(torch.equal(fed[t], want[:, t - 1].argmax(-1)),
               f"with teacher_forcing = 0, step {t} must be fed the argmax of step {t - 1}'s logits",
               "teacher forcing at p = 0")


@lab.check("seq2seq.teacher_forcing", points=1)
def no_teacher_forcing_in_eval_mode(student, g):
    """In eval mode, even with teacher_forcing = 1, each step is fed the previous argmax."""
    fed, want, tgt = tf_run(student, g, 1.0, train=False)
    for t in range(1, len(fed)):
        expect(torch.equal(fed[t], want[:, t - 1].argmax(-1)),
               f"in eval mode step {t} must be fed the argmax of step {t - 1}'s logits, whatever "
               f"teacher_forcing is: teacher forcing is still on at evaluation (use self.training)",
               "teacher forcing still on at evaluation")


@lab.check("seq2seq.teacher_forcing", points=1)
def teacher_forcing_rate(student, g):
    """For p = 0.3 and 0.7, over about 600 choices, the share of steps fed the true token is p
    (within 4.5 standard deviations), drawn for each example on its own."""
    for p in (0.3, 0.7):
        fed, want, tgt = tf_run(student, g, p, B=64, T=12)
        truth = mixed = total = 0
        for t in range(1, len(fed)):
            pred = want[:, t - 1].argmax(-1)
            ok = (fed[t] == tgt[:, t]) | (fed[t] == pred)
            expect(bool(ok.all()), f"with teacher_forcing = {p}, step {t} was fed a token that is "
                                   f"neither the true one nor the previous argmax")
            differ = tgt[:, t] != pred
            chose = fed[t][differ] == tgt[:, t][differ]
            truth += int(chose.sum())
            total += int(differ.sum())
            mixed += bool(chose.any() and not chose.all())
        rate = truth / max(1, total)
        sd = math.sqrt(p * (1 - p) / max(1, total))
        expect(abs(rate - p) <= 4.5 * sd, f"with teacher_forcing = {p} the true token was fed at "
                                          f"{rate:.3f} of {total} steps, expected {p} (+- {4.5 * sd:.3f})")
        expect(mixed >= 3, f"with teacher_forcing = {p} every step fed the true token to all examples "
                           f"or to none: draw the choice for each example (torch.rand(B) < p)",
               "one coin for the whole batch")


# The training check's recipe and pass mark: the reference over 20 seeds scored min 0.580, mean 0.758,
# max 0.903 (benchmarks/calibrate.py seq2seq; docs/labs/seq2seq.md); chance is 0.
TRAIN = dict(steps=60, batch_size=32, lr=1e-2, p=1.0)
TRAIN_CONFIG = dict(emb_dim=16, enc_hidden=24, dec_hidden=32, attn_dim=16, attention=True)
TRAIN_THRESHOLD = 0.3


def generated_tensors(n_train=1500, n_test=300):
    train = mathqa.generate(n_train, seed=7)
    test = mathqa.generate(n_test, seed=8)
    sv, tv = mathqa.vocabularies(train)
    return mathqa.encode(train, sv, tv), mathqa.encode(test, sv, tv), sv, tv


def reference_greedy(ref, src, lengths, max_len):
    with torch.no_grad():
        enc_out, state = ref.encoder(src, lengths)
        mask = mask_of(src, lengths)
        token = torch.full((len(src),), BOS)
        out = []
        for _ in range(max_len):
            logits, state, _ = ref.decoder.step(token, state, enc_out, mask)
            token = logits.argmax(-1)
            out.append(token)
        return torch.stack(out, 1)


def generated_exact_match(student, seed: int) -> float:
    """Exact match on held-out generated problems after TRAIN: the student's Seq2Seq trains in
    its process; the grader's own model, holding the trained weights, decodes greedily the test
    problems, which the student's process never receives."""
    train, test, sv, tv = generated_tensors()
    config = dict(src_vocab=len(sv), tgt_vocab=len(tv), **TRAIN_CONFIG)
    state = student.run(probes.train_model, config=config, src=train.src, lengths=train.lengths,
                        tgt=train.tgt, seed=seed, **TRAIN)
    expect(type(state) is dict, "train_model must return the trained Seq2Seq's state_dict")
    want = RefSeq2Seq(config).state_dict()
    wrong = sorted(set(want) ^ set(state)) + [k for k in want if k in state and state[k].shape != want[k].shape]
    expect(not wrong, f"the trained Seq2Seq's parameters are not the handout's: {wrong[:3]}")
    ref = RefSeq2Seq(config)
    ref.load_state_dict({k: v.float() for k, v in state.items()})
    ref.eval()
    with torch.no_grad():
        ids = torch.cat([reference_greedy(ref, test.src[i:i + 100], test.lengths[i:i + 100], test.tgt.shape[1])
                         for i in range(0, len(test.src), 100)])
    predicted = [mathqa.decode_program(row, tv) for row in ids]
    return sum(p == g for p, g in zip(predicted, test.programs)) / len(predicted)


@lab.check("seq2seq.teacher_forcing", points=2, timeout=60)
def trains_on_generated_problems(student, g):
    """The student's Seq2Seq, trained for seconds with teacher forcing, writes the exact
    programs of held-out generated problems (decoded greedily by the grader's model)."""
    em = generated_exact_match(student, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    expect(em >= TRAIN_THRESHOLD, f"exact match {em:.3f} on held-out problems after {TRAIN['steps']} "
                                  f"steps is below {TRAIN_THRESHOLD}: the model computes but does not "
                                  f"learn (are the logits for step t compared with tgt[:, t+1]?)")


# --------------------------------------------------------------------------- seq2seq.greedy

@lab.check("seq2seq.greedy", points=2)
def greedy_matches_reference(student, g):
    """Tokens equal the reference's argmax decoding, EOS kept and PAD after it, for a batch with
    unsorted lengths (drawn so that some examples stop early and some do not) and a batch of 1
    (which stops early)."""
    c = CONFIG
    for lengths in ([4, 6, 2, 5, 3], [3]):
        for attempt in range(100):
            state = random_state(c, g)
            state["decoder.out.bias"][EOS] += float(torch.rand(1, generator=g)) * 2
            src, lens = batch(g, c, lengths)
            ref = reference(c, state)
            raw = reference_greedy(ref, src, lens, 6)
            early = (raw[:, :-1] == EOS).any(1)
            if early.any() and (len(lengths) == 1 or not early.all()):
                break
        else:
            raise RuntimeError("no model with an early EOS in 100 draws")
        got = student.run(probes.greedy, config=c, state=state, src=src, lengths=lens, max_len=6)
        done = torch.cumsum((raw == EOS).long(), 1) - (raw == EOS).long() > 0
        want = torch.where(done, torch.full_like(raw, PAD), raw)
        tokens = expect_shape(got["tokens"], want.shape, "greedy_decode's tokens (B, max_len)")
        expect_close(tokens, want, "greedy_decode's tokens", atol=0, rtol=0, diagnoses={
            "decoding continued after EOS (write PAD after an example's EOS)": raw.double(),
            "EOS replaced by PAD too (keep the EOS, PAD only after it)":
                torch.where(done | (raw == EOS), torch.full_like(raw, PAD), raw).double()})


# ---------------------------------------------------------------------- seq2seq.beam_search

def score_of(total, length, alpha):
    return total / length ** alpha


def exhaustive(ref, src, lengths, max_len):
    """Every complete output sequence (ending in EOS, or max_len tokens long) with its log-prob."""
    with torch.no_grad():
        enc_out, state = ref.encoder(src, lengths)
        mask = mask_of(src, lengths)
        prefixes, logp, complete = [[]], torch.zeros(1, dtype=torch.float64), []
        for t in range(max_len):
            K = len(prefixes)
            last = torch.tensor([s[-1] if s else BOS for s in prefixes])
            logits, state, _ = ref.decoder.step(last, state, enc_out.expand(K, -1, -1), mask.expand(K, -1))
            lp = logp[:, None] + logits.log_softmax(-1)
            keep = []
            for k in range(K):
                for v in range(lp.shape[1]):
                    seq = prefixes[k] + [v]
                    if v == EOS or t == max_len - 1:
                        complete.append((seq, lp[k, v].item()))
                    else:
                        keep.append((k, seq, lp[k, v]))
            if not keep:
                break
            index = torch.tensor([k for k, _, _ in keep])
            state = (state[0][index], state[1][index])
            prefixes, logp = [s for _, s, _ in keep], torch.stack([v for _, _, v in keep])
        return complete


def reference_beam(ref, src, lengths, beam_size, max_len, alpha):
    with torch.no_grad():
        enc_out, state = ref.encoder(src, lengths)
        mask = mask_of(src, lengths)
        active, logp, finished = [[]], torch.zeros(1, dtype=torch.float64), []
        for _ in range(max_len):
            K = len(active)
            last = torch.tensor([s[-1] if s else BOS for s in active])
            logits, state, _ = ref.decoder.step(last, state, enc_out.expand(K, -1, -1), mask.expand(K, -1))
            V = logits.shape[1]
            total = (logp[:, None] + logits.log_softmax(-1)).flatten()
            top = total.topk(min(beam_size, len(total)))
            keep = []
            for value, i in zip(top.values.tolist(), top.indices.tolist()):
                k, v = divmod(i, V)
                if v == EOS:
                    finished.append((score_of(value, len(active[k]) + 1, alpha), active[k] + [v]))
                else:
                    keep.append((k, active[k] + [v], value))
            if not keep:
                active = []
                break
            index = torch.tensor([k for k, _, _ in keep])
            state = (state[0][index], state[1][index])
            active = [s for _, s, _ in keep]
            logp = torch.tensor([v for _, _, v in keep], dtype=torch.float64)
        finished += [(score_of(v, len(s), alpha), s) for s, v in zip(active, logp.tolist())]
        return max(finished, key=lambda f: f[0])


def as_tokens(value, what):
    expect(type(value) is list and all(type(t) is int for t in value),
           f"{what}: the tokens must be a list of ints (or a 1-D tensor), got {type(value).__name__}")
    return value


def wide_beam_case(g, wanted: str, scale: float, eos_bias: float):
    """A tiny model and problem whose exhaustive best sequence (normalised, alpha 1) differs from
    the best without normalisation ('normalised'), or is a finished one that differs from the
    best never-finished one ('finished'); drawn from `g` until it does (each draw succeeds in
    about half the cases)."""
    c, L, alpha = TINY, 4, 1.0
    for _ in range(60):
        state = random_state(c, g, scale=scale)
        state["decoder.out.bias"][EOS] += eos_bias
        src, lengths = batch(g, c, [int(torch.randint(1, 5, (1,), generator=g))])
        complete = exhaustive(reference(c, state), src, lengths, L)
        best = max(complete, key=lambda s: score_of(s[1], len(s[0]), alpha))
        raw = max(complete, key=lambda s: s[1])
        unfinished = max((s for s in complete if s[0][-1] != EOS), key=lambda s: s[1])
        if (wanted == "normalised" and best[0] != raw[0]) or (
                wanted == "finished" and best[0][-1] == EOS and best[0] != unfinished[0]):
            return state, src, lengths, best, raw, unfinished
    raise RuntimeError(f"no tiny model with a distinguishing '{wanted}' case in 60 draws")


@lab.check("seq2seq.beam_search", points=2, timeout=20)
def beam_search_is_exhaustive_when_wide(student, g):
    """With a beam as wide as every hypothesis of a tiny model (5 tokens, 4 steps), beam search
    returns the sequence of best normalised score found by exhaustive search, and its score; on
    two models drawn so that the best sequence without normalisation, and then the best one
    that never finishes, are different ones."""
    c, L, alpha = TINY, 4, 1.0
    V = c["tgt_vocab"]
    width = V * (V - 1) ** (L - 1)
    for wanted, scale, eos_bias in (("normalised", 0.8, 0.5), ("finished", 1.2, 1.0)):
        state, src, lengths, best, raw, unfinished = wide_beam_case(g, wanted, scale, eos_bias)
        got = student.run(probes.beam, config=c, state=state, src=src, lengths=lengths, beam_size=width,
                          max_len=L, alpha=alpha)
        tokens = as_tokens(got["tokens"], "beam_search")
        if tokens == raw[0] and raw[0] != best[0]:
            expect(False, f"beam search (beam {width}, alpha {alpha}) returned {tokens}, the sequence of "
                          f"highest total log-probability, instead of {best[0]}, the best normalised "
                          f"score: no length normalisation (divide by len**alpha), so short ones win",
                   "no length normalisation")
        if tokens == unfinished[0] and unfinished[0] != best[0]:
            expect(False, f"beam search returned {tokens}, which never finished, instead of {best[0]}: "
                          f"finished hypotheses (ending in EOS) were dropped; keep them",
                   "finished hypotheses dropped")
        expect(tokens == best[0], f"beam search (beam {width} >= every hypothesis, alpha {alpha}) "
                                  f"returned {tokens}, expected {best[0]}, the exhaustive search's best")
        want = score_of(best[1], len(best[0]), alpha)
        expect(abs(got["score"] - want) <= 1e-4 * (1 + abs(want)),
               f"beam search's score {got['score']} should be the normalised log-probability {want:.6f} "
               f"(sum of log-softmax / len**alpha, EOS counted)")


@lab.check("seq2seq.beam_search", points=1)
def beam_one_is_greedy(student, g):
    """Beam 1 returns the greedy sequence (up to and with its EOS) and its normalised score."""
    c = CONFIG
    for n in (5, 2, 6):
        state = random_state(c, g)
        state["decoder.out.bias"][EOS] += 1.0
        src, lengths = batch(g, c, [n])
        ref = reference(c, state)
        got = student.run(probes.beam, config=c, state=state, src=src, lengths=lengths, beam_size=1,
                          max_len=6, alpha=0.5)
        want_score, want = reference_beam(ref, src, lengths, 1, 6, 0.5)
        tokens = as_tokens(got["tokens"], "beam_search")
        expect(tokens == want, f"beam search with beam 1 returned {tokens}, greedy decoding gives {want}")
        expect(abs(got["score"] - want_score) <= 1e-4 * (1 + abs(want_score)),
               f"beam 1's score {got['score']} should be {want_score:.6f} (log-prob / len**0.5)")


@lab.check("seq2seq.beam_search", points=1)
def beam_matches_reference(student, g):
    """Beam 3 and 4 with alpha 0.7 and 0 return the reference beam search's best hypothesis."""
    c = CONFIG
    for beam_size, alpha in ((3, 0.7), (4, 0.0), (3, 1.0)):
        state = random_state(c, g, scale=0.8)
        state["decoder.out.bias"][EOS] += 0.5
        src, lengths = batch(g, c, [int(torch.randint(1, 7, (1,), generator=g))])
        ref = reference(c, state)
        got = student.run(probes.beam, config=c, state=state, src=src, lengths=lengths,
                          beam_size=beam_size, max_len=7, alpha=alpha)
        want_score, want = reference_beam(ref, src, lengths, beam_size, 7, alpha)
        tokens = as_tokens(got["tokens"], "beam_search")
        expect(tokens == want, f"beam search (beam {beam_size}, alpha {alpha}) returned {tokens}, "
                               f"expected {want} (keep the beam_size best extensions over all active "
                               f"hypotheses by total log-probability; finished ones leave the beam)")
        expect(abs(got["score"] - want_score) <= 1e-4 * (1 + abs(want_score)),
               f"beam search's score {got['score']} should be {want_score:.6f}")


# -------------------------------------------------------------------------- seq2seq.metrics

def metric_cases(g):
    """(predicted, gold, numbers, answers): right programs, programs written with spaces and a
    trailing '|', a different program with the right value, division by zero, malformed and
    not-yet-computed (#k) programs, an answer of None."""
    a, b, c = (float(v) for v in torch.randint(2, 9, (3,), generator=g))
    cases = [
        ("multiply(n0,n1)|add(#0,n2)", "multiply(n0,n1)|add(#0,n2)|", [a, b, c], a * b + c),
        ("multiply( n0 , n1 )|add(#0,n2)|", "multiply(n0,n1)|add(#0,n2)", [a, b, c], a * b + c),
        ("multiply(n1,n0)|add(#0,n2)", "multiply(n0,n1)|add(#0,n2)", [a, b, c], a * b + c),
        ("divide(n0,subtract(n1,n1))", "divide(n0,n1)", [a, b], a / b),
        ("subtract(n1,n1)|divide(n0,#0)", "divide(n0,n1)", [a, b], a / b),
        ("add(n0,#1)|add(#0,n1)", "add(n0,n1)", [a, b], a + b),
        ("add(n0,n1", "add(n0,n1)", [a, b], a + b),
        ("add(n0,n1)|divide(#0,const_100)", "add(n0,n1)|divide(#0,const_100)", [a, b], (a + b) / 100 * 1.0004),
        ("add(n0,n1)", "add(n0,n1)", [a, b], None),
        ("subtract(n0,n1)", "subtract(n0,n1)", [a, b], a - b + 0.5),
    ]
    return [list(x) for x in zip(*cases)]


def expected_metrics(predicted, gold, numbers, answers, rel_tol):
    exact = sum(mathqa.normalise(p) == mathqa.normalise(q) for p, q in zip(predicted, gold)) / len(gold)
    right = 0
    for p, n, a in zip(predicted, numbers, answers):
        try:
            right += a is not None and math.isclose(mathqa.execute(p, n), a, rel_tol=rel_tol, abs_tol=rel_tol)
        except mathqa.ProgramError:
            pass
    return exact, right / len(answers)


@lab.check("seq2seq.metrics", points=2)
def metrics_on_known_programs(student, g):
    """Exact match and execution accuracy on programs with known values, among them programs
    that cannot run (division by zero, malformed, #k before step k), which count as wrong."""
    predicted, gold, numbers, answers = metric_cases(g)
    for rel_tol in (1e-3, 1e-5):
        try:
            got = student.run(probes.metrics, predicted=predicted, gold=gold, numbers=numbers,
                              answers=answers, rel_tol=rel_tol)
        except StudentError as exc:
            if exc.status != "error":
                raise
            expect(False, f"the metrics stopped on a program that cannot run ({exc.message}): catch "
                          f"vislab.data.mathqa.ProgramError and count the program as wrong",
                   "ProgramError not caught")
        exact, execution = expected_metrics(predicted, gold, numbers, answers, rel_tol)
        expect(isinstance(got["exact"], float) and abs(got["exact"] - exact) < 1e-9,
               f"exact_match gave {got['exact']}, expected {exact} (compare normalise(p) with "
               f"normalise(gold): no spaces, no trailing '|')")
        expect(isinstance(got["execution"], float) and abs(got["execution"] - execution) < 1e-9,
               f"execution_accuracy with rel_tol {rel_tol} gave {got['execution']}, expected {execution} "
               f"(math.isclose(value, answer, rel_tol=rel_tol, abs_tol=rel_tol); an answer of None "
               f"or a program that cannot run is wrong; divide by the number of problems)")
