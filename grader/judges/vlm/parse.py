"""Turn a VLM's free-text answer (and, where given, yes/no token probabilities) into a verdict.

The failure modes REVEAL lists are handled explicitly rather than by a lenient regex:
answers outside the {yes, no} set ("maybe", "partially", an echoed "yes/no"), degenerate
repetition ("no no no no"), refusals ("I cannot tell") and extra text around the answer.
Anything not confidently mapped to yes/no is ``unparsed``: it is counted by the judge and
never treated as a "yes".
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

YES, NO, UNPARSED = "yes", "no", "unparsed"
VERDICTS = (YES, NO, UNPARSED)

# Confidence (P(label correct)) assigned from text when no token probabilities exist.
TEXT_CONFIDENCE = {(YES, False): 0.9, (YES, True): 0.7, (NO, False): 0.1, (NO, True): 0.3}
MAX_REASON_CHARS = 240

_YES_WORDS = {"yes", "y", "yeah", "yep", "correct", "accurate", "right", "true", "valid"}
_NO_WORDS = {"no", "n", "nope", "incorrect", "inaccurate", "wrong", "false", "invalid",
             "mislabeled", "mislabelled", "misclassified"}
_HEDGES = re.compile(r"\b(probably|likely|maybe|perhaps|possibly|seems?|appears?|i think|"
                     r"i believe|not entirely sure|somewhat|mostly)\b")
_REFUSAL = re.compile(
    r"\b(i\s*(?:am|'m)?\s*(?:cannot|can't|can not|unable|not able)|i\s*(?:am|'m)\s*sorry|"
    r"as an ai|cannot (?:determine|tell|say|be determined)|can't (?:determine|tell|say)|"
    r"unable to (?:determine|tell|see|verify)|not (?:possible|able) to (?:determine|tell)|"
    r"impossible to (?:determine|tell)|hard to (?:tell|say)|difficult to (?:tell|say|determine)|"
    r"not sure|unclear|uncertain|i don't know|none of (?:the|these)|n/a)\b")
# Outside-the-set answers that name neither yes nor no.
_OUT_OF_SET = {"maybe", "partially", "partly", "unsure", "unknown", "uncertain", "none",
               "both", "neither", "possibly", "perhaps", "somewhat", "depends", "unclear"}
# "answer: yes", "final answer - no", "verdict: **yes**" ... the last one wins.
_LABELED = re.compile(r"(?:final\s+answer|answer|verdict|decision|output|judg(?:e)?ment|result)"
                      r"\s*(?:is|:|-|=|—)\s*[\"'*`(\[]*\s*(yes|no)\b")
# Answer stated at the end of a reasoning paragraph.
_CONCLUDING = re.compile(r"(?:therefore|thus|so|hence|in conclusion|overall|conclusion)\s*[,:]?\s*"
                         r"(?:the answer is\s*)?[\"'*`]*\s*(yes|no)\b")
_ANSWER_IS = re.compile(r"\bthe answer is\s*[\"'*`]*\s*(yes|no)\b")
# Whole-sentence statements about the label, used only when exactly one polarity appears.
_POS_PHRASES = re.compile(r"\b(?:label|class|annotation|box|detection)s?\s+(?:is|are|looks|seems)\s+"
                          r"(?:correct|accurate|right|appropriate|valid)\b")
_NEG_PHRASES = re.compile(r"\b(?:label|class|annotation|box|detection)s?\s+(?:is|are|looks|seems)\s+"
                          r"(?:not\s+(?:correct|accurate|right|appropriate|valid)|incorrect|"
                          r"inaccurate|wrong|invalid)\b|\bmis-?(?:labell?ed|classified)\b")
_CONF_NUM = re.compile(r"confidence\s*(?:score|level)?\s*(?:is|:|=|of)?\s*(\d{1,3}(?:\.\d+)?)\s*(%?)")
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_WORD = re.compile(r"[a-z][a-z'/]*")


@dataclass(frozen=True)
class ParsedAnswer:
    """A verdict (``yes`` = the label is correct), a short reason and P(label correct)."""

    verdict: str
    reason: str
    confidence: float | None
    source: str  # "logprobs", "text" or "none"


def _clean(text: str) -> str:
    text = _THINK.sub(" ", text or "")
    text = text.replace("**", "").replace("__", "").replace("`", "")
    return re.sub(r"\s+", " ", text).strip()


def _dedupe(text: str) -> str:
    """Collapse degenerate repetition (same word or sentence over and over)."""
    text = re.sub(r"\b(\w+)(?:[\s,.;:!-]+\1\b)+", r"\1", text, flags=re.I)
    out, seen = [], set()
    for s in re.split(r"(?<=[.!?])\s+", text):
        k = s.strip().lower()
        if k and k not in seen:
            seen.add(k)
            out.append(s.strip())
    return " ".join(out)


def _short(reason: str) -> str:
    reason = _dedupe(reason).strip(" \t-–—:;,.\"'")
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return reason


def _text_confidence(verdict: str, low: str) -> float:
    m = _CONF_NUM.search(low)
    if m:
        v = float(m.group(1))
        v = v / 100.0 if (m.group(2) or v > 1.0) else v
        if 0.0 <= v <= 1.0:
            # Stated confidence is in the verdict, not in "the label is correct".
            return v if verdict == YES else 1.0 - v
    return TEXT_CONFIDENCE[(verdict, bool(_HEDGES.search(low)))]


def _leading_verdict(low: str) -> tuple[str | None, int]:
    """Verdict from the first word(s), and where the rest of the answer starts."""
    m = _WORD.search(low)
    if not m or m.start() > 3:
        return None, 0
    w = m.group(0)
    rest_start = m.end()
    # Degenerate repetition of the answer itself ("no no no no") carries no reason.
    rep = re.match(r"(?:[\s,.;:!-]+" + re.escape(w) + r"\b)+", low[rest_start:])
    if rep and w in _YES_WORDS | _NO_WORDS:
        rest_start += rep.end()
    # An echoed label set ("yes/no", "yes or no") is not an answer.
    if "/" in w or re.match(r"(yes|no)\s*(?:or|/)\s*(yes|no)\b", low[m.start():]):
        return None, 0
    if w in ("not", "isn't"):
        m2 = re.match(r"(?:not|isn't)\s+(correct|accurate|right|valid)\b", low[m.start():])
        return (NO, m.start() + m2.end()) if m2 else (None, 0)
    if w in _YES_WORDS:
        return YES, rest_start
    if w in _NO_WORDS:
        # Every prompt here puts the question so that a leading "no" means "something is wrong".
        return NO, rest_start
    return None, 0


def parse_text(text: str) -> tuple[str, str, float | None]:
    """Verdict, reason and text-derived confidence of a free-text answer."""
    clean = _clean(text)
    low = clean.lower()
    if not low:
        return UNPARSED, "", None

    verdict, start = _leading_verdict(low)
    if verdict is not None:
        reason = clean[start:]
        # "yes ... no ... yes": a leading word followed by the opposite labeled answer is
        # self-contradictory; trust an explicit "answer: x" if present.
        labeled = _LABELED.findall(low)
        if labeled and labeled[-1] != verdict:
            verdict = labeled[-1]
        return verdict, _short(reason), _text_confidence(verdict, low)

    for rx in (_LABELED, _ANSWER_IS, _CONCLUDING):
        found = list(rx.finditer(low))
        if found:
            m = found[-1]
            verdict = m.group(1)
            reason = clean[: m.start()] + " " + clean[m.end():]
            return verdict, _short(reason), _text_confidence(verdict, low)

    if _REFUSAL.search(low):
        return UNPARSED, _short(clean), None
    m = _WORD.search(low)
    first = m.group(0) if m else ""
    if first in _OUT_OF_SET:
        return UNPARSED, _short(clean), None

    pos, neg = bool(_POS_PHRASES.search(low)), bool(_NEG_PHRASES.search(low))
    if pos != neg:
        verdict = YES if pos else NO
        # A verdict inferred from a statement, not an answer: treat as hedged.
        return verdict, _short(clean), TEXT_CONFIDENCE[(verdict, True)]
    return UNPARSED, _short(clean), None


def yes_probability(top: Mapping[str, float] | Iterable[tuple[str, float]],
                    logprobs: bool = True) -> float | None:
    """P(yes) / (P(yes) + P(no)) from one step's candidate tokens, or None if neither appears.

    ``top`` maps token text -> log-probability (or probability with ``logprobs=False``);
    variants such as " Yes", "YES", "yes." all count as yes.
    """
    items = top.items() if isinstance(top, Mapping) else top
    p_yes = p_no = 0.0
    for tok, v in items:
        w = norm_token(tok)
        p = math.exp(v) if logprobs else float(v)
        if w == YES:
            p_yes += p
        elif w == NO:
            p_no += p
    if p_yes + p_no <= 0.0:
        return None
    return p_yes / (p_yes + p_no)


def norm_token(tok: str) -> str:
    """Lower-cased token text without spaces, punctuation or markdown (``" **Yes"`` -> ``yes``)."""
    return re.sub(r"[^a-z]", "", (tok or "").lower())


def answer_step(tokens: Sequence[str], max_lead: int = 3) -> int | None:
    """Index of the yes/no token when the answer leads the text (within ``max_lead`` tokens).

    Token probabilities are only meaningful at the step where the model commits to the
    answer; a "no" deep inside reasoning ("no overlap") is not that step.
    """
    for i, tok in enumerate(tokens[:max_lead]):
        w = norm_token(tok)
        if w in (YES, NO):
            return i
        if w:  # a real word that is not the answer: the answer does not lead
            return None
    return None


def parse_answer(text: str | None, yes_prob: float | None = None) -> ParsedAnswer:
    """Parse an answer; ``yes_prob`` (from token probabilities) replaces the text confidence."""
    if text is None:
        return ParsedAnswer(UNPARSED, "", None, "none")
    verdict, reason, conf = parse_text(text)
    if verdict == UNPARSED:
        return ParsedAnswer(UNPARSED, reason, None, "none")
    if yes_prob is not None and not math.isnan(yes_prob):
        return ParsedAnswer(verdict, reason, float(yes_prob), "logprobs")
    return ParsedAnswer(verdict, reason, conf, "text")
