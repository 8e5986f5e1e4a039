"""Exact match and execution accuracy of predicted programs."""
from __future__ import annotations

import math

from vislab.data.mathqa import ProgramError, execute, normalise


def exact_match(predicted: list[str], gold: list[str]) -> float:
    """The fraction of programs equal to the gold ones after normalise (no spaces, no trailing
    '|'). 0.0 for an empty list."""
    ### BEGIN SOLUTION
    # TODO(seq2seq.metrics): compare normalise(p) with normalise(g) pairwise.
    if not gold:
        return 0.0
    return sum(normalise(p) == normalise(g) for p, g in zip(predicted, gold)) / len(gold)
    ### END SOLUTION


def execution_accuracy(predicted: list[str], numbers: list[list[float]], answers: list,
                       rel_tol: float = 1e-3) -> float:
    """The fraction of programs whose value (vislab.data.mathqa.execute with the problem's
    numbers) is within math.isclose(value, answer, rel_tol=rel_tol, abs_tol=rel_tol) of the
    answer. A program that cannot run (execute raises ProgramError) or an answer of None counts
    as wrong; nothing else may stop the count. 0.0 for an empty list."""
    ### BEGIN SOLUTION
    # TODO(seq2seq.metrics): execute each program; catch ProgramError; compare with isclose.
    if not answers:
        return 0.0
    correct = 0
    for program, nums, ans in zip(predicted, numbers, answers):
        if ans is None:
            continue
        try:
            value = execute(program, nums)
        except ProgramError:
            continue
        correct += math.isclose(value, ans, rel_tol=rel_tol, abs_tol=rel_tol)
    return correct / len(answers)
    ### END SOLUTION
