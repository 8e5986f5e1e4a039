"""MathQA (Amini et al., 2019): math word problems with executable `linear_formula` programs.

A problem's numbers are n0, n1, ... in the order they appear in its text; a program is steps
`op(arg,arg)` joined by "|", each argument a number nK, a constant const_X (const_100,
const_0_25 = 0.25, const_pi) or #K, the result of step K (0-based). The answer is the value of
the last step:

    execute("multiply(n0,n1)|add(#0,n2)", [3, 4, 5])  ->  17.0

Files: the real MathQA json files (train.json, dev.json, test.json, each a list of records with
"Problem", "Rationale", "options", "correct", "annotated_formula", "linear_formula", "category")
are read from <data_root>/MathQA/ (data_root() is $VISLAB_DATA or datasets/full/); get them
from https://math-qa.github.io/ (MathQA.zip) and unzip them there. Offline, `generate(n, seed)`
writes templated word problems in the same json format, with programs over MathQA's
operations, deterministically from the seed.

A program that cannot run (unknown operation, wrong number of arguments, a reference to a number
or step that does not exist, division by zero, a result that is not a finite number) raises
ProgramError, which metrics catch and count as "not executable".
"""
from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

from vislab.data.common import MissingData, data_root

SPLITS = ("train", "dev", "test")
URL = "https://math-qa.github.io/"


class ProgramError(ValueError):
    """A program that cannot be executed; the message says why."""


def _div(a, b):
    if b == 0:
        raise ProgramError("division by zero")
    return a / b


def _inverse(a):
    return _div(1.0, a)


def _int_args(name, *args):
    if any(a != int(a) or a < 0 for a in args) or max(args) > 1000:
        raise ProgramError(f"{name} needs whole numbers from 0 to 1000, got {args}")
    return [int(a) for a in args]


# A subset of MathQA's operations (the ones its programs use most), with their semantics:
# name -> (number of arguments, function).
OPERATIONS = {
    "add": (2, lambda a, b: a + b),
    "subtract": (2, lambda a, b: a - b),
    "multiply": (2, lambda a, b: a * b),
    "divide": (2, _div),
    "power": (2, lambda a, b: a ** b),
    "negate": (1, lambda a: -a),
    "inverse": (1, _inverse),
    "sqrt": (1, lambda a: math.sqrt(a) if a >= 0 else _raise("sqrt of a negative number")),
    "log": (1, lambda a: math.log(a) if a > 0 else _raise("log of a number <= 0")),
    "floor": (1, math.floor),
    "max": (2, max),
    "min": (2, min),
    "reminder": (2, lambda a, b: a % b if b != 0 else _raise("remainder by zero")),
    "gcd": (2, lambda a, b: math.gcd(*_int_args("gcd", a, b))),
    "lcm": (2, lambda a, b: math.lcm(*_int_args("lcm", a, b))),
    "factorial": (1, lambda a: math.factorial(*_int_args("factorial", a))),
    "choose": (2, lambda a, b: math.comb(*_int_args("choose", a, b))),
    "permutation": (2, lambda a, b: math.perm(*_int_args("permutation", a, b))),
    "square_area": (1, lambda a: a * a),
    "square_perimeter": (1, lambda a: 4 * a),
    "square_edge_by_area": (1, lambda a: math.sqrt(a) if a >= 0 else _raise("sqrt of a negative number")),
    "square_edge_by_perimeter": (1, lambda a: a / 4),
    "rectangle_area": (2, lambda a, b: a * b),
    "rectangle_perimeter": (2, lambda a, b: 2 * (a + b)),
    "circle_area": (1, lambda r: math.pi * r * r),
    "circumface": (1, lambda r: 2 * math.pi * r),
    "volume_cube": (1, lambda a: a ** 3),
    "surface_cube": (1, lambda a: 6 * a * a),
    "triangle_area": (2, lambda b, h: b * h / 2),
    "speed": (2, _div),
    "to_percent": (1, lambda a: a * 100),
    "from_percent": (1, lambda a: a / 100),
}


def _raise(message):
    raise ProgramError(message)


STEP = re.compile(r"^([a-z_]+)\(([^()]*)\)$")


def parse_program(program: str) -> list[tuple[str, list[str]]]:
    """'multiply(n0,n1)|add(#0,n2)' -> [('multiply', ['n0', 'n1']), ('add', ['#0', 'n2'])].
    Spaces and a trailing '|' (as MathQA writes them) are ignored; a malformed program raises
    ProgramError."""
    if not isinstance(program, str):
        raise ProgramError(f"a program is a string, got {type(program).__name__}")
    text = program.replace(" ", "").strip("|")
    if not text:
        raise ProgramError("empty program")
    steps = []
    for i, part in enumerate(text.split("|")):
        match = STEP.match(part)
        if not match:
            raise ProgramError(f"step {i} {part!r} is not op(arg,...)")
        op, args = match.group(1), [a for a in match.group(2).split(",")]
        if op not in OPERATIONS:
            raise ProgramError(f"step {i}: unknown operation {op!r}")
        if len(args) != OPERATIONS[op][0] or "" in args:
            raise ProgramError(f"step {i}: {op} takes {OPERATIONS[op][0]} argument(s), got {part!r}")
        steps.append((op, args))
    return steps


def constant(name: str) -> float:
    """MathQA's constants: const_pi, const_100 = 100, const_0_25 = 0.25, const_3_6 = 3.6."""
    body = name[len("const_"):]
    if body == "pi":
        return math.pi
    if not re.fullmatch(r"\d+(_\d+)?", body):
        raise ProgramError(f"unknown constant {name!r}")
    return float(body.replace("_", "."))


def argument(arg: str, numbers: list[float], results: list[float], step: int) -> float:
    if re.fullmatch(r"n\d+", arg):
        k = int(arg[1:])
        if k >= len(numbers):
            raise ProgramError(f"step {step}: {arg} but the problem has {len(numbers)} number(s)")
        return float(numbers[k])
    if re.fullmatch(r"#\d+", arg):
        k = int(arg[1:])
        if k >= step:
            raise ProgramError(f"step {step}: {arg} refers to a step that has not run yet")
        return results[k]
    if arg.startswith("const_"):
        return constant(arg)
    raise ProgramError(f"step {step}: unknown argument {arg!r}")


def execute(program: str, numbers: list[float]) -> float:
    """The value of `program`'s last step, with nK = numbers[K] and #K = the result of step K."""
    results: list[float] = []
    for i, (op, args) in enumerate(parse_program(program)):
        values = [argument(a, numbers, results, i) for a in args]
        try:
            value = float(OPERATIONS[op][1](*values))
        except ProgramError:
            raise
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise ProgramError(f"step {i}: {op}{tuple(values)} failed: {exc}") from None
        if not math.isfinite(value):
            raise ProgramError(f"step {i}: {op}{tuple(values)} is not a finite number")
        results.append(value)
    return results[-1]


# ------------------------------------------------------------------------ text and programs

NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")


def problem_numbers(text: str) -> list[float]:
    """The numbers of a problem in order of appearance (n0, n1, ...); '1,000' is 1000."""
    return [float(m.replace(",", "")) for m in NUMBER.findall(text)]


def problem_tokens(text: str) -> list[str]:
    """Lower-cased words and punctuation, each number replaced by its name n0, n1, ..."""
    count = iter(range(10**6))
    text = NUMBER.sub(lambda m: f" n{next(count)} ", text.lower())
    return re.findall(r"n\d+|[a-z]+|[^\sa-z\d]", text)


def program_tokens(program: str) -> list[str]:
    """'multiply(n0,n1)|add(#0,n2)' -> ['multiply', 'n0', 'n1', 'add', '#0', 'n2'] (the
    arities of the operations make the brackets redundant)."""
    return [t for op, args in parse_program(program) for t in (op, *args)]


def program_from_tokens(tokens: list[str]) -> str:
    """The inverse of program_tokens; ProgramError when the tokens are no program."""
    steps, i = [], 0
    while i < len(tokens):
        op = tokens[i]
        if op not in OPERATIONS:
            raise ProgramError(f"token {i}: {op!r} is not an operation")
        arity = OPERATIONS[op][0]
        args = tokens[i + 1:i + 1 + arity]
        if len(args) < arity or any(a in OPERATIONS for a in args):
            raise ProgramError(f"token {i}: {op} needs {arity} argument(s)")
        steps.append(f"{op}({','.join(args)})")
        i += 1 + arity
    if not steps:
        raise ProgramError("empty program")
    return "|".join(steps)


def normalise(program: str) -> str:
    """A program as exact match compares it: no spaces, no trailing '|'."""
    return program.replace(" ", "").strip("|")


def answer(record: dict) -> float | None:
    """The value of the correct option (its first number), or None when it holds none."""
    options = re.split(r"\s*,?\s*\b([a-e])\s*\)\s*", " " + record["options"])
    pairs = dict(zip(options[1::2], options[2::2]))
    found = problem_numbers(pairs.get(record["correct"], ""))
    return found[0] if found else None


# -------------------------------------------------------------------------------- the files

def mathqa_folder() -> Path:
    return data_root() / "MathQA"


def load_mathqa(split: str) -> list[dict]:
    """The real MathQA records of `split` (train, dev or test)."""
    if split not in SPLITS:
        raise ValueError(f"unknown MathQA split {split!r}; splits are {', '.join(SPLITS)}")
    path = mathqa_folder() / f"{split}.json"
    if not path.exists():
        raise MissingData(f"MathQA's {split}.json is not at {path}: download MathQA.zip from {URL} and "
                          f"unzip train.json, dev.json and test.json into {mathqa_folder()} (or set "
                          f"VISLAB_DATA); offline, use the generated set (vislab.data.mathqa.generate)")
    return json.loads(path.read_text())


# ------------------------------------------------------------------ the generated problems

ITEMS = ["pens", "books", "apples", "chairs", "tickets", "shirts", "lamps", "boxes"]
PEOPLE = ["a shop", "a farmer", "a school", "a trader", "a club", "a baker"]


@dataclass(frozen=True)
class Template:
    text: str           # with {n0}, {n1}, ... for the numbers (in order of appearance) and {item}, {who}
    program: str        # over n0, n1, ... as they appear in the text
    category: str
    ranges: tuple       # (low, high) for each number, so that every program runs


TEMPLATES = (
    Template("{who} buys {n0} {item} at {n1} dollars each . what is the total cost ?",
             "multiply(n0,n1)", "gain", ((2, 40), (2, 30))),
    Template("{who} pays {n0} dollars for {n1} {item} . what is the price of one ?",
             "divide(n0,n1)", "gain", ((20, 900), (2, 30))),
    Template("a train travels {n0} km in {n1} hours . what is its speed in km per hour ?",
             "divide(n0,n1)", "physics", ((50, 900), (2, 12))),
    Template("in {n0} hours a car covers {n1} km . find its speed .",
             "divide(n1,n0)", "physics", ((2, 12), (50, 900))),
    Template("a worker earns {n0} dollars a day and spends {n1} dollars a day . how much does he "
             "save in {n2} days ?", "subtract(n0,n1)|multiply(#0,n2)", "general",
             ((50, 99), (10, 49), (2, 30))),
    Template("the price of {item} is {n0} dollars . it rises by {n1} % . what is the new price ?",
             "divide(n1,const_100)|add(#0,const_1)|multiply(n0,#1)", "gain", ((20, 900), (2, 60))),
    Template("a rectangle is {n0} m long and {n1} m wide . find its area .",
             "rectangle_area(n0,n1)", "geometry", ((2, 60), (2, 60))),
    Template("a rectangle is {n0} m long and {n1} m wide . find its perimeter .",
             "rectangle_perimeter(n0,n1)", "geometry", ((2, 60), (2, 60))),
    Template("a square has a side of {n0} cm . find its perimeter .",
             "square_perimeter(n0)", "geometry", ((2, 90),)),
    Template("a square has a side of {n0} cm . find its area .",
             "square_area(n0)", "geometry", ((2, 90),)),
    Template("a circle has a radius of {n0} cm . what is its area ?",
             "circle_area(n0)", "geometry", ((2, 40),)),
    Template("{n0} men can finish a job in {n1} days . how many days will {n2} men take ?",
             "multiply(n0,n1)|divide(#0,n2)", "physics", ((2, 30), (2, 40), (2, 30))),
    Template("the average of {n0} numbers is {n1} . what is their sum ?",
             "multiply(n0,n1)", "general", ((2, 30), (2, 90))),
    Template("{who} lends {n0} dollars at {n1} % simple interest a year . what is the interest "
             "after {n2} years ?", "multiply(n0,n1)|multiply(#0,n2)|divide(#1,const_100)", "gain",
             ((100, 900), (2, 15), (2, 9))),
    Template("a tank holds {n0} litres . {n1} litres are used and {n2} litres are added . how "
             "much is in the tank now ?", "subtract(n0,n1)|add(#0,n2)", "general",
             ((100, 900), (10, 99), (10, 99))),
    Template("{who} buys {item} for {n0} dollars and sells them for {n1} dollars . what is the "
             "profit percent ?", "subtract(n1,n0)|divide(#0,n0)|multiply(#1,const_100)", "gain",
             ((20, 400), (401, 900))),
)


def nested(program: str) -> str:
    """The annotated_formula form: 'add(multiply(n0,n1),n2)' for 'multiply(n0,n1)|add(#0,n2)'."""
    done: list[str] = []
    for op, args in parse_program(program):
        args = [done[int(a[1:])] if a.startswith("#") else a for a in args]
        done.append(f"{op}({','.join(args)})")
    return done[-1]


def _format(value: float) -> str:
    return f"{value:.6g}"


# Sentences with a number the program does not use (MathQA's problems have such numbers too):
# up to two open a problem, so that its numbers shift (n0 becomes n1, ...).
DISTRACTORS = ("in {d} , ", "{who} has {d} workers . ", "on day {d} of the month , ",
               "there are {d} days left . ")


def _shift(program: str, k: int) -> str:
    return re.sub(r"\bn(\d+)", lambda m: f"n{int(m.group(1)) + k}", program)


def generate(n: int, seed: int = 0) -> list[dict]:
    """`n` templated word problems in MathQA's json format, deterministically from `seed`; the
    correct option holds the program's value. Up to two sentences with unused numbers open a
    problem (its program's nK shift accordingly)."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        t = rng.choice(TEMPLATES)
        numbers = [rng.randint(lo, hi) for lo, hi in t.ranges]
        who = rng.choice(PEOPLE)
        text = t.text.format(item=rng.choice(ITEMS), who=who,
                             **{f"n{i}": v for i, v in enumerate(numbers)})
        extra = rng.choice((0, 0, 1, 2))
        lead = [rng.choice(DISTRACTORS).format(d=rng.randint(2, 99), who=who) for _ in range(extra)]
        text = "".join(lead) + text
        text = text[0].upper() + text[1:]
        program = _shift(t.program, extra)
        value = execute(program, [0] * extra + numbers)
        letters = "abcde"
        correct = rng.randrange(5)
        values = [value * (1 + 0.1 * (i - correct)) + (i - correct) for i in range(5)]
        options = " , ".join(f"{letters[i]} ) {_format(v)}" for i, v in enumerate(values))
        records.append({"Problem": text, "Rationale": f"\"the answer is {_format(value)}\"",
                        "options": options, "correct": letters[correct],
                        "annotated_formula": nested(program),
                        "linear_formula": program + "|", "category": t.category})
    return records


def generated(split: str, seed: int = 0) -> list[dict]:
    """The generated set's splits: 4,000 train, 500 dev, 500 test problems (disjoint seeds)."""
    sizes = {"train": 4000, "dev": 500, "test": 500}
    if split not in sizes:
        raise ValueError(f"unknown split {split!r}; splits are {', '.join(sizes)}")
    return generate(sizes[split], seed=1000 * seed + SPLITS.index(split))


def write_json(records: list[dict], path: Path) -> Path:
    """Write records as MathQA writes its files (a json list); never over an existing file."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; not overwritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1))
    return path


# ----------------------------------------------------------------------- tensors for a model

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


class Vocab:
    """Token <-> id, the four specials first (PAD 0, BOS 1, EOS 2, UNK 3)."""

    def __init__(self, tokens):
        self.itos = list(SPECIALS) + sorted(set(tokens) - set(SPECIALS))
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def ids(self, tokens: list[str]) -> list[int]:
        return [self.stoi.get(t, UNK) for t in tokens]

    def tokens(self, ids) -> list[str]:
        return [self.itos[i] for i in ids]


@dataclass
class Encoded:
    """A split as tensors: src (N, S) and tgt (N, T) padded with PAD, tgt = BOS program EOS."""
    src: "torch.Tensor"
    lengths: "torch.Tensor"
    tgt: "torch.Tensor"
    programs: list
    numbers: list
    answers: list


def vocabularies(records: list[dict]) -> tuple[Vocab, Vocab]:
    src = [t for r in records for t in problem_tokens(r["Problem"])]
    tgt = [t for r in records for t in program_tokens(r["linear_formula"])]
    return Vocab(src), Vocab(tgt)


def encode(records: list[dict], src_vocab: Vocab, tgt_vocab: Vocab, max_src: int = 120,
           max_tgt: int = 40) -> Encoded:
    """Records as padded id tensors (problems cut to max_src tokens, programs to max_tgt)."""
    import torch

    src, tgt = [], []
    for r in records:
        src.append(src_vocab.ids(problem_tokens(r["Problem"]))[:max_src])
        tgt.append([BOS] + tgt_vocab.ids(program_tokens(r["linear_formula"]))[:max_tgt] + [EOS])
    S, T = max(map(len, src)), max(map(len, tgt))
    return Encoded(torch.tensor([s + [PAD] * (S - len(s)) for s in src]),
                   torch.tensor([len(s) for s in src]),
                   torch.tensor([t + [PAD] * (T - len(t)) for t in tgt]),
                   [normalise(r["linear_formula"]) for r in records],
                   [problem_numbers(r["Problem"]) for r in records],
                   [answer(r) for r in records])


def decode_program(ids, tgt_vocab: Vocab) -> str:
    """Predicted ids (after BOS) -> a program string, up to the first EOS; '' when the tokens
    are no program (which then neither matches nor executes)."""
    tokens = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i != PAD:
            tokens.append(tgt_vocab.itos[i])
    try:
        return program_from_tokens(tokens)
    except ProgramError:
        return ""


def usable(records: list[dict]) -> tuple[list[dict], int]:
    """The records whose linear_formula parses with this executor's operations (the real MathQA
    uses more than OPERATIONS holds), and how many were left out."""
    kept = []
    for r in records:
        try:
            parse_program(r["linear_formula"])
        except (ProgramError, KeyError, TypeError):
            continue
        kept.append(r)
    return kept, len(records) - len(kept)
