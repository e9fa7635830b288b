"""The record a head's `explain` returns: its kinds are its fields, and a sum keeps its first part's."""
import torch

from hade.models.heads.explanation import EXPLANATIONS, FactorExplanation, HeadExplanation


def factors(score: float) -> FactorExplanation:
    return FactorExplanation(torch.zeros(3), torch.tensor(score), None)


def test_the_kinds_are_the_fields_that_are_filled_in():
    assert EXPLANATIONS == ("tha", "factors")
    assert HeadExplanation().kinds == frozenset() and HeadExplanation(factors=factors(0.5)).kinds == {"factors"}


def test_merging_keeps_the_first_explanation_of_a_kind_and_adds_the_others():
    first, second = HeadExplanation(factors=factors(0.1)), HeadExplanation(factors=factors(0.9))
    assert float(first.merged(second).factors.score) == float(torch.tensor(0.1))
    assert float(HeadExplanation().merged(second).factors.score) == float(torch.tensor(0.9))
    assert first.merged(HeadExplanation()) == first
