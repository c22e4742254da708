"""Detection quality on the labelled corpora: the floors the injection guard promises."""

from __future__ import annotations

import importlib.util
import json
import random
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from smesh.config.schema import InjectionGuard
from smesh.extproc.guards.injection import InjectionDetector, RuleSet

CORPUS = Path(__file__).resolve().parents[1] / "corpora" / "injection"
LANGUAGES = ("en", "es", "de", "fr")


def load(name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (CORPUS / name).read_text().splitlines() if line]


@pytest.fixture(scope="module")
def detector() -> InjectionDetector:
    return InjectionDetector.from_config(InjectionGuard(), rules=RuleSet())


@pytest.fixture(scope="module")
def attacks() -> list[dict[str, str]]:
    return load("attacks.jsonl")


@pytest.fixture(scope="module")
def benign() -> list[dict[str, str]]:
    return load("benign.jsonl")


def flagged(detector: InjectionDetector, rows: list[dict[str, str]]) -> float:
    hits = sum(detector.score([row["text"]]).score >= detector.threshold for row in rows)
    return hits / len(rows)


def test_corpora_have_the_promised_size_and_shape(
    attacks: list[dict[str, str]], benign: list[dict[str, str]]
) -> None:
    """At least 200 of each, every line labelled, four languages of attacks."""
    assert len(attacks) >= 200
    assert len(benign) >= 200
    for row in attacks + benign:
        assert {"text", "lang", "kind", "source"} <= row.keys()
        assert row["source"] in {"hand", "generated"}
    languages = Counter(row["lang"] for row in attacks)
    assert all(languages[lang] >= 20 for lang in LANGUAGES), languages


def test_true_positive_rate_at_least_90_percent(
    detector: InjectionDetector, attacks: list[dict[str, str]]
) -> None:
    """TPR >= 0.9 at the default threshold 0.5."""
    assert detector.threshold == 0.5
    assert flagged(detector, attacks) >= 0.9


def test_false_positive_rate_at_most_5_percent(
    detector: InjectionDetector, benign: list[dict[str, str]]
) -> None:
    """FPR <= 0.05 at the default threshold 0.5."""
    assert flagged(detector, benign) <= 0.05


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_language_is_covered(
    detector: InjectionDetector, attacks: list[dict[str, str]], lang: str
) -> None:
    """No language rides on the others' figures: each catches at least 85 %."""
    assert flagged(detector, [row for row in attacks if row["lang"] == lang]) >= 0.85


def test_generated_lines_are_what_the_generator_writes(
    attacks: list[dict[str, str]], benign: list[dict[str, str]]
) -> None:
    """The committed corpus matches generate.py (rerun it after editing hand lines)."""
    generator = _generator()
    rng = random.Random(generator.SEED)
    hand_benign = [row for row in benign if row["source"] == "hand"]
    expected_attacks = generator.attack_variants(rng)
    expected_benign = generator.benign_variants(rng, hand_benign)
    strip = [{k: v for k, v in row.items() if k != "source"} for row in attacks]
    assert [
        row for row, src in zip(strip, attacks, strict=True) if src["source"] == "generated"
    ] == (expected_attacks)
    strip = [{k: v for k, v in row.items() if k != "source"} for row in benign]
    assert [
        row for row, src in zip(strip, benign, strict=True) if src["source"] == "generated"
    ] == (expected_benign)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("injection_corpus", CORPUS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
