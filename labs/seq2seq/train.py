"""Train the lab's models: `vislab train seq2seq [options]` (see --help).

    vislab train seq2seq                      # generated problems, CPU, a few minutes: the LSTM
                                              # and attention models, the teacher-forcing table
                                              # (0.3 / 0.6 / 0.9) and the beam table (1 / 10 / 20)
    vislab train seq2seq --models attention --tf 0.9 --beams 1,5
    vislab train seq2seq --full --device cuda # the real MathQA files (<data_root>/MathQA/)

The run folder gets one sub-folder per model (metrics.jsonl, checkpoint.pt, curves.png) and
results.json / results.md with the tables. GloVe vectors initialise the embeddings when
<data_root>/glove/glove.6B.<emb>d.txt is present (--glove names another file); the BERT rows
need a local Hugging Face BERT folder (--bert) and the `transformers` library
(pip install -e '.[bert]'); each says in one line when it is absent.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from vislab import RUNS_DIR, plots
from vislab.data import mathqa
from vislab.data.common import data_root
from vislab.errors import UsageError
from vislab.training import RunConfig, fit, positive_int, setup, teardown

from .decode import beam_search, greedy_decode
from .metrics import exact_match, execution_accuracy
from .bert import bert_inputs, bert_seq2seq, load_bert
from .model import BOS, PAD, Seq2Seq, Seq2SeqConfig

MODELS = ("lstm", "attention", "bert-frozen", "bert-finetuned")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="lstm,attention,bert-frozen,bert-finetuned",
                        help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--tf", default="0.3,0.6,0.9",
                        help="teacher-forcing probabilities for the attention model's table; the "
                             "last one trains the other models too")
    parser.add_argument("--beams", default="1,10,20", help="beam sizes for the beam table")
    parser.add_argument("--beam-problems", type=positive_int, default=200,
                        help="test problems the beam table decodes (beam search is one problem "
                             "at a time)")
    parser.add_argument("--alpha", type=float, default=1.0, help="beam search's length normalisation")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--emb-dim", type=positive_int, default=50)
    parser.add_argument("--hidden", type=positive_int, default=64)
    parser.add_argument("--glove", type=Path, help="a glove.6B.*d.txt file (default: "
                        "<data_root>/glove/glove.6B.<emb-dim>d.txt when present)")
    parser.add_argument("--bert", type=Path, help="a local Hugging Face BERT folder (default: "
                        "<data_root>/bert-base-uncased when present)")


# ------------------------------------------------------------------------------------ data

def load_splits(full: bool):
    if full:
        splits = {}
        for s in mathqa.SPLITS:
            splits[s], dropped = mathqa.usable(mathqa.load_mathqa(s))
            if dropped:
                print(f"MathQA {s}: {dropped} problems left out (their programs use operations "
                      f"outside vislab.data.mathqa.OPERATIONS)")
        return splits, "MathQA"
    return {s: mathqa.generated(s) for s in mathqa.SPLITS}, "generated MathQA-style problems"


def glove_vectors(path: Path, vocab: mathqa.Vocab, dim: int) -> dict[int, torch.Tensor]:
    """Rows of the GloVe file for the vocabulary's words (others keep their random init)."""
    found = {}
    with open(path, encoding="utf8") as f:
        for line in f:
            word, *values = line.rstrip().split(" ")
            if word in vocab.stoi and len(values) == dim:
                found[vocab.stoi[word]] = torch.tensor([float(v) for v in values])
    return found


def init_glove(model: Seq2Seq, args, src_vocab, tgt_vocab) -> str:
    path = args.glove or data_root() / "glove" / f"glove.6B.{args.emb_dim}d.txt"
    if not path.exists():
        return f"GloVe: no {path} (random embeddings; put glove.6B.{args.emb_dim}d.txt there to use it)"
    with torch.no_grad():
        for emb, vocab in ((model.encoder.embedding, src_vocab), (model.decoder.embedding, tgt_vocab)):
            rows = glove_vectors(path, vocab, args.emb_dim)
            for i, v in rows.items():
                emb.weight[i] = v
    return f"GloVe: embeddings initialised from {path}"


# -------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def predict_greedy(model, data: mathqa.Encoded, tgt_vocab, device, batch_size=250) -> list[str]:
    model.eval()
    out = []
    for i in range(0, len(data.src), batch_size):
        ids = greedy_decode(model, data.src[i:i + batch_size].to(device),
                            data.lengths[i:i + batch_size].to(device), BOS, data.tgt.shape[1])
        out += [mathqa.decode_program(row.tolist(), tgt_vocab) for row in ids.cpu()]
    return out


def scores(predicted, data) -> dict:
    return {"exact_match": exact_match(predicted, data.programs),
            "execution_accuracy": execution_accuracy(predicted, data.numbers, data.answers)}


def beam_table(model, data, tgt_vocab, beams, n, alpha) -> list[dict]:
    model = model.cpu().eval()
    rows = []
    for beam in beams:
        predicted = []
        for i in range(min(n, len(data.src))):
            tokens, _ = beam_search(model, data.src[i:i + 1], data.lengths[i:i + 1], BOS, beam,
                                    data.tgt.shape[1], alpha)
            predicted.append(mathqa.decode_program(tokens, tgt_vocab))
        sub = mathqa.Encoded(data.src[:n], data.lengths[:n], data.tgt[:n], data.programs[:n],
                             data.numbers[:n], data.answers[:n])
        rows.append({"beam": beam, **scores(predicted, sub), "problems": len(predicted)})
    return rows


# -------------------------------------------------------------------------------- training

def train_one(name, config, p, data, vocabs, args, dist, out, model=None):
    """Train one model (a Seq2Seq of `config`, or `model` as given) with teacher forcing p."""
    train, dev = data["train"], data["dev"]
    torch.manual_seed(args.seed)
    if model is None:
        model = Seq2Seq(config)
        print(init_glove(model, args, *vocabs))
    dataset = TensorDataset(train.src, train.lengths, train.tgt)

    def step(model, batch):
        src, lengths, tgt = batch
        logits = model(src, lengths, tgt, teacher_forcing=p)                 # (B, T-1, V)
        target = tgt[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                               ignore_index=PAD)
        real = target != PAD
        acc = ((logits.argmax(-1) == target) & real).sum() / real.sum()
        return {"loss": loss, "acc": acc}

    def evaluate(model):
        predicted = predict_greedy(model, dev, vocabs[1], dist.device)
        s = scores(predicted, dev)
        return {"dev_exact_acc": s["exact_match"], "dev_exec_acc": s["execution_accuracy"]}

    epochs = args.epochs or (30 if args.full else 3)
    run = RunConfig(out / name, epochs, args.batch_size, args.lr, 0.0, resume=args.resume)
    history = fit(model, dataset, step, run, dist, evaluate=evaluate,
                  meta={"config": asdict(model.config), "teacher_forcing": p}, seed=args.seed)
    if dist.is_main:
        plots.curves(history, out / name / "curves.png", f"{name}, teacher forcing {p}")
    test = scores(predict_greedy(model, data["test"], vocabs[1], dist.device), data["test"])
    return model, {"model": name, "teacher_forcing": p, "epochs": epochs, **test,
                   "dev_exact_match": history[-1]["dev_exact_acc"]}


def parse_list(text: str, kind, what: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--{what} takes comma-separated numbers, got {text!r}") from None
    if not values:
        raise UsageError(f"--{what} is empty")
    return values


def main(args: argparse.Namespace) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise UsageError(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    tfs = parse_list(args.tf, float, "tf")
    if any(not 0 <= p <= 1 for p in tfs):
        raise UsageError(f"--tf: probabilities must lie in [0, 1], got {tfs}")
    beams = parse_list(args.beams, int, "beams")
    if any(b < 1 for b in beams):
        raise UsageError(f"--beams: beam sizes must be at least 1, got {beams}")
    dist = setup(args.device, args.seed)
    records, source = load_splits(args.full)
    vocabs = mathqa.vocabularies(records["train"])
    data = {s: mathqa.encode(r, *vocabs) for s, r in records.items()}
    out = Path(args.out or RUNS_DIR / "seq2seq" / f"run-{datetime.now():%Y%m%d-%H%M%S}")
    print(f"training on {source}: {len(records['train'])} train / {len(records['dev'])} dev / "
          f"{len(records['test'])} test problems, {len(vocabs[0])} source and {len(vocabs[1])} "
          f"program tokens, on {dist.device}; run folder {out}")
    base = dict(src_vocab=len(vocabs[0]), tgt_vocab=len(vocabs[1]), emb_dim=args.emb_dim,
                enc_hidden=args.hidden, dec_hidden=args.hidden, attn_dim=args.hidden)
    main_p = tfs[-1]
    results, trained = [], {}
    if "lstm" in models:
        model, row = train_one("lstm", Seq2SeqConfig(**base, attention=False), main_p, data, vocabs,
                               args, dist, out)
        results.append(row)
        trained["lstm"] = (model, row, data)
    tf_rows = []
    if "attention" in models:
        for p in tfs:
            name = "attention" if p == main_p else f"attention-tf{p:g}"
            model, row = train_one(name, Seq2SeqConfig(**base, attention=True), p, data, vocabs, args,
                                   dist, out)
            tf_rows.append(row)
            if p == main_p:
                results.append(row)
                trained["attention"] = (model, row, data)
    bert_kinds = [k for k in ("bert-frozen", "bert-finetuned") if k in models]
    note = bert_note(args) if bert_kinds else None
    for kind in bert_kinds:
        if note:
            results.append({"model": kind, "note": note})
            continue
        bert, tokenizer = load_bert(bert_folder(args))
        bert_data = {s: bert_encoded(records[s], data[s], tokenizer) for s in data}
        model = bert_seq2seq(bert, Seq2SeqConfig(**base), freeze=kind == "bert-frozen")
        model, row = train_one(kind, None, main_p, bert_data, vocabs, args, dist, out, model=model)
        results.append(row)
        trained[kind] = (model, row, bert_data)
    best = max(trained.values(), key=lambda mr: mr[1]["dev_exact_match"], default=None)
    beam_rows = []
    if best is not None:
        beam_rows = beam_table(best[0], best[2]["test"], vocabs[1], beams, args.beam_problems, args.alpha)
    if dist.is_main:
        report = {"data": source, "models": results, "teacher_forcing": tf_rows,
                  "beam": {"model": best[1]["model"] if best else None, "alpha": args.alpha,
                           "rows": beam_rows}}
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(report, indent=1))
        (out / "results.md").write_text(markdown(report))
        print(markdown(report))
        print(f"wrote {out / 'results.md'}, {out / 'results.json'} and a folder per model")
    teardown(dist)
    return 0


def bert_folder(args) -> Path:
    return args.bert or data_root() / "bert-base-uncased"


def bert_note(args) -> str | None:
    """Why the BERT rows cannot run here, or None when they can."""
    path = bert_folder(args)
    if not (path / "config.json").exists():
        return f"not run: no BERT checkpoint at {path} (a local Hugging Face folder)"
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "not run: the transformers library is not installed (pip install -e '.[bert]')"
    return None


def bert_encoded(records, encoded: mathqa.Encoded, tokenizer) -> mathqa.Encoded:
    src, lengths = bert_inputs(records, tokenizer)
    return mathqa.Encoded(src, lengths, encoded.tgt, encoded.programs, encoded.numbers, encoded.answers)


def markdown(report: dict) -> str:
    lines = [f"Data: {report['data']}.", "", "| model | teacher forcing | epochs | test exact match | "
             "test execution accuracy |", "|---|---|---|---|---|"]
    for r in report["models"]:
        if "note" in r:
            lines.append(f"| {r['model']} | | | {r['note']} | |")
        else:
            lines.append(f"| {r['model']} | {r['teacher_forcing']:g} | {r['epochs']} | "
                         f"{r['exact_match']:.3f} | {r['execution_accuracy']:.3f} |")
    if report["teacher_forcing"]:
        lines += ["", "| attention, teacher forcing p | test exact match | test execution accuracy |",
                  "|---|---|---|"]
        lines += [f"| {r['teacher_forcing']:g} | {r['exact_match']:.3f} | {r['execution_accuracy']:.3f} |"
                  for r in report["teacher_forcing"]]
    b = report["beam"]
    if b["rows"]:
        lines += ["", f"| beam ({b['model']}, alpha {b['alpha']:g}) | exact match | execution accuracy "
                  f"| test problems |", "|---|---|---|---|"]
        lines += [f"| {r['beam']} | {r['exact_match']:.3f} | {r['execution_accuracy']:.3f} | {r['problems']} |"
                  for r in b["rows"]]
    return "\n".join(lines) + "\n"


def required_tasks(args) -> set[str]:
    """The tasks this run calls: training the model and teacher forcing, evaluation greedy
    decoding and the metrics, the beam table beam search; attention unless only the LSTM
    without attention trains; the Bi-LSTM encoder unless only BERT models train."""
    models = {m.strip() for m in args.models.split(",") if m.strip()}
    needed = {"seq2seq.decoder_step", "seq2seq.teacher_forcing", "seq2seq.greedy",
              "seq2seq.beam_search", "seq2seq.metrics"}
    if models - {"lstm"}:
        needed.add("seq2seq.attention")
    if models & {"lstm", "attention"}:
        needed.add("seq2seq.encoder")
    return needed
