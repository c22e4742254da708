"""Detection quality on the labelled corpus: the floors the PII guard promises.

An expected entity counts as found when a finding of the same type covers it; a finding
counts as correct when it overlaps an expected entity of its type. Figures per type are
printed by ``python -m bench.guards``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smesh.config.schema import BUILTIN_ENTITIES, PiiGuard
from smesh.extproc.guards.pii import PiiDetector
from smesh.extproc.guards.redact import Redactor

CASES = Path(__file__).resolve().parents[1] / "corpora" / "pii" / "cases.jsonl"


@dataclass
class Scores:
    expected: Counter[str]
    covered: Counter[str]
    reported: Counter[str]
    correct: Counter[str]
    negatives: int
    untouched: int

    def recall(self, entity: str | None = None) -> float:
        if entity is None:
            return sum(self.covered.values()) / sum(self.expected.values())
        return self.covered[entity] / self.expected[entity]

    def precision(self) -> float:
        return sum(self.correct.values()) / sum(self.reported.values())


@pytest.fixture(scope="module")
def cases() -> list[dict[str, Any]]:
    with CASES.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def scores(cases: list[dict[str, Any]]) -> Scores:
    detector = PiiDetector.from_config(PiiGuard())
    s = Scores(Counter(), Counter(), Counter(), Counter(), 0, 0)
    for case in cases:
        text = case["text"]
        if case["kind"] == "negative":
            s.negatives += 1
            s.untouched += Redactor(detector, "redact").apply(text) == text
            continue
        findings = detector.find(text)
        spans = [(e["type"], e["start"], e["start"] + len(e["value"])) for e in case["entities"]]
        for entity, start, end in spans:
            s.expected[entity] += 1
            s.covered[entity] += any(
                f.entity == entity and f.start <= start and f.end >= end for f in findings
            )
        for f in findings:
            s.reported[f.entity] += 1
            s.correct[f.entity] += any(
                entity == f.entity and f.start < end and f.end > start
                for entity, start, end in spans
            )
    return s


def test_corpus_has_the_promised_size_and_shape(cases: list[dict[str, Any]]) -> None:
    """At least 500 PII cases over every built-in type and seven locales, and hard negatives;
    every label is the exact substring at its offset."""
    pii = [c for c in cases if c["kind"] == "pii"]
    assert len(pii) >= 500
    assert sum(c["kind"] == "negative" for c in cases) >= 150
    assert {e["type"] for c in pii for e in c["entities"]} == set(BUILTIN_ENTITIES)
    assert len({c["id"].split("-")[0] for c in pii if "_" in c["id"]}) >= 7
    for case in pii:
        for e in case["entities"]:
            assert case["text"][e["start"] : e["start"] + len(e["value"])] == e["value"], case["id"]


def test_recall_floor(scores: Scores, record_property: Any) -> None:
    """At least 98 % of the labelled entities are found, each type at least 95 %."""
    by_type = {e: round(scores.recall(e), 3) for e in sorted(scores.expected)}
    record_property("pii_recall", by_type)
    assert scores.recall() >= 0.98, by_type
    assert min(by_type.values()) >= 0.95, by_type


def test_negatives_come_out_untouched(scores: Scores) -> None:
    """At least 95 % of the hard negatives pass redaction unchanged."""
    assert scores.untouched / scores.negatives >= 0.95, (scores.untouched, scores.negatives)


def test_precision_floor(scores: Scores, record_property: Any) -> None:
    """Of what is reported in PII cases (which also hold dates, versions, ids), 95 % is right."""
    record_property("pii_precision", round(scores.precision(), 3))
    assert scores.precision() >= 0.95, dict(scores.reported - scores.correct)
