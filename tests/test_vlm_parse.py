"""Parser tests over realistic VLM answers, including REVEAL's failure modes."""
from __future__ import annotations

import math

import pytest

from grader.judges.vlm.parse import (NO, UNPARSED, YES, answer_step, norm_token, parse_answer,
                              yes_probability)
from grader.judges.vlm.prompts import get_prompt

CASES = [
    # plain and formatted answers
    ("Yes", YES), ("yes.", YES), ("YES", YES), (" Yes, the label is right.", YES),
    ("**Yes** - the box tightly fits a cat.", YES), ("`no`", NO), ('"No"', NO),
    ("No - the object is a dog, not a cat.", NO), ("No. The box is mostly background.", NO),
    ("no, it's a bicycle", NO), ("Correct.", YES), ("Incorrect - it is a bus", NO),
    ("not correct, that's a truck", NO), ("Wrong label: this is a sheep.", NO),
    ("Nope, that's a horse", NO),
    # repetition / stalling
    ("yes yes yes yes yes yes yes", YES), ("no no no no no no", NO), ("No, no, no.", NO),
    # reasoning first, answer last / labelled
    ("The object in the magenta box is a cat with its tail visible. Therefore, yes.", YES),
    ("1. The object is a dog. 2. The label says cat. Final answer: no", NO),
    ("Answer: YES", YES), ("Verdict: **no** (the box cuts off half the person)", NO),
    ("Looking at the crop, I see a red car. The answer is no.", NO),
    ("<think>the box has a cat, so no problem</think>Yes", YES),
    ("I can see the object clearly. In conclusion, yes.", YES),
    # statements without a yes/no word
    ("The label is correct.", YES), ("The label is incorrect; the animal is a dog.", NO),
    ("This object appears to be mislabeled.", NO),
    # outside the label set / echoed options / refusals
    ("Maybe", UNPARSED), ("Partially correct", UNPARSED), ("Yes/No", UNPARSED),
    ("yes or no", UNPARSED), ("None", UNPARSED), ("unsure", UNPARSED), ("", UNPARSED),
    ("I cannot determine this from the image.", UNPARSED),
    ("I'm sorry, but I can't help with identifying this.", UNPARSED),
    ("It is hard to tell because the image is blurry.", UNPARSED),
    ("the computer detected three objects, which are the coloured bird shapes. the masks are "
     "clear and distinct, with no overlap between the objects", UNPARSED),
    ("A cat sitting on a sofa.", UNPARSED),
]


@pytest.mark.parametrize("text,verdict", CASES)
def test_verdicts(text, verdict):
    p = parse_answer(text)
    assert p.verdict == verdict, (text, p)
    if verdict == UNPARSED:
        assert p.confidence is None and p.source == "none"
    else:
        assert 0.0 <= p.confidence <= 1.0
        assert (p.confidence > 0.5) == (verdict == YES)


def test_unparsed_is_never_yes():
    for text, verdict in CASES:
        if verdict == UNPARSED:
            assert parse_answer(text, yes_prob=0.99).verdict == UNPARSED
            assert parse_answer(text, yes_prob=0.99).confidence is None


def test_none_text_is_unparsed():
    assert parse_answer(None).verdict == UNPARSED


def test_reason_extraction_and_dedup():
    assert parse_answer("No - the object is a dog, not a cat.").reason == "the object is a dog, not a cat"
    assert parse_answer("yes yes yes yes").reason == ""
    r = parse_answer("No. It is a dog. It is a dog. It is a dog.").reason
    assert r == "It is a dog"
    assert parse_answer("No - " + "very " * 200 + "wrong").reason == "very wrong"
    long = parse_answer("No - " + " ".join(f"word{i}" for i in range(200))).reason
    assert len(long) <= 240 and long.endswith("…")


def test_hedged_and_stated_confidence():
    assert parse_answer("Yes").confidence == pytest.approx(0.9)
    assert parse_answer("Yes, probably.").confidence == pytest.approx(0.7)
    assert parse_answer("No, but I'm not entirely sure").confidence == pytest.approx(0.3)
    assert parse_answer("No. Confidence: 80%").confidence == pytest.approx(0.2)
    assert parse_answer("Yes (confidence 0.95)").confidence == pytest.approx(0.95)


def test_logprobs_override_text_confidence():
    p = parse_answer("No - wrong class", yes_prob=0.12)
    assert p.verdict == NO and p.confidence == pytest.approx(0.12) and p.source == "logprobs"


def test_yes_probability_from_top_tokens():
    top = {"Yes": math.log(0.6), " yes": math.log(0.1), "No": math.log(0.2), "The": math.log(0.1)}
    assert yes_probability(top) == pytest.approx(0.7 / 0.9)
    assert yes_probability({"The": -0.1, "A": -2.0}) is None
    assert yes_probability([("yes", 0.3), ("no", 0.3)], logprobs=False) == pytest.approx(0.5)


def test_answer_step_only_when_answer_leads():
    assert answer_step(["Yes", ",", " the"]) == 0
    assert answer_step(["**", "No", "**"]) == 1
    assert answer_step(["The", " box", " no"]) is None
    assert norm_token("\u0120Yes") == "yes" and norm_token("\u2581no") == "no"


def test_prompts_builtin_and_custom():
    assert "{label}" not in get_prompt("stepwise").format(label="cat")
    assert '"cat"' in get_prompt("yesno").format(label="cat")
    s = get_prompt("stepwise", "sample").format(labels="0: cat", num_boxes=1)
    assert "0: cat" in s
    custom = get_prompt("Is this a {label}? Say yes or no.")
    assert custom.name == "custom" and custom.format(label="dog") == "Is this a dog? Say yes or no."
    with pytest.raises(ValueError, match="label"):
        get_prompt("Is this right? Say yes or no.")
    with pytest.raises(ValueError, match="unknown placeholders"):
        get_prompt("Is this a {klass}?")
    with pytest.raises(ValueError, match="unknown"):
        get_prompt("fancy")


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_to_a_valid_answer(text):
    p = parse_answer(text)
    assert p.verdict in (YES, NO, UNPARSED)
    assert (p.confidence is None) == (p.verdict == UNPARSED)
    assert p.confidence is None or 0.0 <= p.confidence <= 1.0
    assert len(p.reason) <= 240
