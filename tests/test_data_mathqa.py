"""MathQA data: the program executor on known programs, the tokens, the generator, the reader."""
import json
import math

import pytest

from vislab.data import MissingData, mathqa
from vislab.data.mathqa import ProgramError, execute


@pytest.mark.parametrize("program, numbers, value", [
    ("multiply(n0,n1)|add(#0,n2)", [3, 4, 5], 17.0),
    ("multiply(n0,n1)|add(#0,n2)|", [3, 4, 5], 17.0),               # MathQA's trailing '|'
    ("add(n0,n1)|multiply(#0,n2)|subtract(#1,#0)", [1, 2, 3], 6.0),  # #k is step k, 0-based
    ("divide(n0,const_100)|multiply(#0,n1)", [20, 50], 10.0),
    ("multiply(n0,const_0_25)", [8], 2.0),
    ("multiply(const_3_6,n0)", [10], 36.0),
    ("circle_area(n0)", [2], 4 * math.pi),
    ("power(n0,n1)|sqrt(#0)", [3, 4], 9.0),
    ("subtract(n1,n0)|divide(#0,n0)|multiply(#1,const_100)", [200, 250], 25.0),
    ("rectangle_perimeter(n0,n1)", [2.5, 4], 13.0),
    ("choose(n0,n1)", [5, 2], 10.0),
])
def test_known_programs(program, numbers, value):
    assert execute(program, numbers) == pytest.approx(value)


def test_references_are_not_off_by_one():
    # #1 is the second step's result (9), #0 the first's (3): an off-by-one gives another value
    assert execute("add(n0,n1)|multiply(#0,n2)|subtract(#1,#0)", [1, 2, 3]) == 6.0
    with pytest.raises(ProgramError, match="has not run yet"):
        execute("add(n0,#0)", [1, 2])
    with pytest.raises(ProgramError, match="has not run yet"):
        execute("add(n0,n1)|add(#1,n0)", [1, 2])


@pytest.mark.parametrize("program, words", [
    ("divide(n0,n1)", "division by zero"),
    ("subtract(n0,n0)|divide(n1,#0)", "division by zero"),
    ("inverse(n1)", "division by zero"),
    ("add(n0,n1", "is not op(arg,...)"),
    ("", "empty program"),
    ("frobnicate(n0,n1)", "unknown operation 'frobnicate'"),
    ("add(n0)", "takes 2 argument"),
    ("add(n0,n5)", "n5 but the problem has 3"),
    ("add(n0,const_x)", "unknown constant"),
    ("add(n0,foo)", "unknown argument"),
    ("power(n0,const_1000)|power(#0,const_1000)", "failed"),
    ("sqrt(n2)", "sqrt of a negative"),
    ("factorial(const_0_5)", "whole numbers"),
])
def test_programs_that_cannot_run_raise_program_error(program, words):
    with pytest.raises(ProgramError, match=words.replace("(", r"\(").replace(")", r"\)")):
        execute(program, [5.0, 0.0, -1.0])


def test_an_infinite_result_is_a_program_error():
    with pytest.raises(ProgramError, match="not a finite number"):
        execute("multiply(n0,n0)", [1e200])


def test_a_non_string_program_is_a_program_error():
    with pytest.raises(ProgramError):
        execute(None, [1])


def test_tokens_round_trip_and_numbers_in_order():
    program = "multiply(n0,n1)|add(#0,const_100)"
    tokens = mathqa.program_tokens(program)
    assert tokens == ["multiply", "n0", "n1", "add", "#0", "const_100"]
    assert mathqa.program_from_tokens(tokens) == program
    with pytest.raises(ProgramError):
        mathqa.program_from_tokens(["multiply", "n0"])
    with pytest.raises(ProgramError):
        mathqa.program_from_tokens(["n0", "add"])
    text = "A shop sells 1,200 pens at 2.5 dollars , then 3 more ."
    assert mathqa.problem_numbers(text) == [1200.0, 2.5, 3.0]
    assert mathqa.problem_tokens(text)[:6] == ["a", "shop", "sells", "n0", "pens", "at"]
    assert "n2" in mathqa.problem_tokens(text)
    assert mathqa.nested("multiply(n0,n1)|add(#0,n2)") == "add(multiply(n0,n1),n2)"


def test_generated_problems_are_deterministic_and_their_programs_give_the_answer():
    a, b = mathqa.generate(200, seed=3), mathqa.generate(200, seed=3)
    assert a == b and a != mathqa.generate(200, seed=4)
    keys = {"Problem", "Rationale", "options", "correct", "annotated_formula", "linear_formula", "category"}
    ops = set()
    for r in a:
        assert set(r) == keys
        value = execute(r["linear_formula"], mathqa.problem_numbers(r["Problem"]))
        assert mathqa.answer(r) == pytest.approx(value, rel=1e-5)
        ops |= {op for op, _ in mathqa.parse_program(r["linear_formula"])}
    assert ops <= set(mathqa.OPERATIONS) and len(ops) >= 8


def test_encode_and_decode():
    records = mathqa.generate(50, seed=0)
    sv, tv = mathqa.vocabularies(records)
    enc = mathqa.encode(records, sv, tv)
    assert enc.src.shape[0] == 50 and (enc.tgt[:, 0] == mathqa.BOS).all()
    assert int(enc.lengths.max()) == enc.src.shape[1]
    for row, program in zip(enc.tgt, enc.programs):
        assert mathqa.decode_program(row[1:], tv) == program
    assert mathqa.decode_program([tv.stoi["add"], mathqa.EOS], tv) == ""  # no program: ''


def test_the_real_files_are_read_from_data_root_and_named_when_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path))
    with pytest.raises(MissingData, match="MathQA.zip from https://math-qa.github.io/"):
        mathqa.load_mathqa("train")
    with pytest.raises(ValueError, match="unknown MathQA split"):
        mathqa.load_mathqa("validation")
    records = [{"Problem": "a is 5 and b is 7 . find a + b .", "Rationale": "", "options":
                "a ) 10 , b ) 12 , c ) 14 , d ) 16 , e ) none", "correct": "b",
                "annotated_formula": "add(n0,n1)", "linear_formula": "add(n0,n1)|", "category": "general"}]
    path = mathqa.write_json(records, tmp_path / "MathQA" / "dev.json")
    assert mathqa.load_mathqa("dev") == records
    assert mathqa.answer(records[0]) == 12.0
    with pytest.raises(FileExistsError):
        mathqa.write_json(records, path)
    assert json.loads(path.read_text()) == records


def test_records_with_operations_outside_the_executor_are_left_out():
    good = mathqa.generate(3, seed=0)
    bad = {**good[0], "linear_formula": "volume_cone(n0,n1)|"}
    kept, dropped = mathqa.usable(good + [bad])
    assert kept == good and dropped == 1
