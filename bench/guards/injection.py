"""Injection scorer and banned-term matcher: quality on the labelled corpora, and speed.

Run: ``.venv/bin/python -m bench.guards`` (every guard benchmark) or
``.venv/bin/python -m bench.guards.injection``.

One JSON line per figure, ``{"bench": "guards", "figure": ..., "value": ...}``:

- ``injection_tpr`` / ``injection_fpr``: share of ``tests/corpora/injection`` attacks /
  benign texts scored at or over the default threshold 0.5; once overall, then per
  language (``"lang"``). The corpora were written before the rules and then used to tune
  them: these are training-set figures, not a held-out estimate.
- ``injection_rules_compile_ms``: building the shared ``RuleSet`` (once per process).
- ``injection_us_per_4kb``: median µs to score one 4 KB prompt, per ``engine``
  (``hyperscan``; ``re2``, the per-rule fallback) and ``text``: ``english_prose`` (Faker
  paragraphs, no hits: the common case) and ``corpus_mix`` (benign corpus texts run
  together: several languages, dense with look-alike phrases, so most passages have
  hits to place: a bad case).
- ``banned_us_per_4kb``: median µs for ``BannedTermMatcher.find`` with 100 terms (half of
  them two words) on the same prompts.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from faker import Faker

from smesh.config.schema import InjectionGuard
from smesh.extproc.guards.banned import BannedTermMatcher
from smesh.extproc.guards.injection import InjectionDetector, RuleSet

CORPUS = Path(__file__).resolve().parents[2] / "tests" / "corpora" / "injection"
PROMPT_BYTES = 4096
PROMPTS = 100
ROUNDS = 3


def emit(figure: str, value: float, **labels: Any) -> None:
    print(json.dumps({"bench": "guards", "figure": figure, **labels, "value": value}), flush=True)


def _load(name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (CORPUS / name).read_text().splitlines() if line]


def _prompts(pieces: Sequence[str], rng: random.Random) -> list[str]:
    """PROMPTS texts of PROMPT_BYTES characters, each made of randomly chosen pieces."""
    prompts = []
    for _ in range(PROMPTS):
        text = ""
        while len(text) < PROMPT_BYTES:
            text += rng.choice(pieces) + "\n\n"
        prompts.append(text[:PROMPT_BYTES])
    return prompts


def _median_us(call: Callable[[str], object], prompts: Sequence[str]) -> float:
    """Median wall time of one call over every prompt, after a warm-up round."""
    for prompt in prompts:
        call(prompt)
    samples = []
    for _ in range(ROUNDS):
        for prompt in prompts:
            start = time.perf_counter_ns()
            call(prompt)
            samples.append((time.perf_counter_ns() - start) / 1000)
    return round(statistics.median(samples), 1)


def _score_one(detector: InjectionDetector, text: str) -> object:
    return detector.score([text])


def _quality(detector: InjectionDetector) -> None:
    for label, figure in (("attacks.jsonl", "injection_tpr"), ("benign.jsonl", "injection_fpr")):
        rows = _load(label)
        hits = [detector.score([row["text"]]).score >= detector.threshold for row in rows]
        emit(figure, round(sum(hits) / len(hits), 4), n=len(hits))
        for lang in sorted({row["lang"] for row in rows}):
            mine = [hit for hit, row in zip(hits, rows, strict=True) if row["lang"] == lang]
            emit(figure, round(sum(mine) / len(mine), 4), lang=lang, n=len(mine))


def run() -> None:
    start = time.perf_counter()
    rules = RuleSet()
    emit(
        "injection_rules_compile_ms",
        round((time.perf_counter() - start) * 1000),
        engine=rules.engine,
    )
    detector = InjectionDetector.from_config(InjectionGuard(), rules=rules)
    _quality(detector)

    rng = random.Random(7)
    fake = Faker("en_US")
    fake.seed_instance(7)
    prose = _prompts([fake.paragraph(nb_sentences=8) for _ in range(200)], rng)
    mix = _prompts([row["text"] for row in _load("benign.jsonl")], rng)
    for engine in ("hyperscan", "re2"):
        scorer = InjectionDetector(RuleSet(engine=engine))
        for name, prompts in (("english_prose", prose), ("corpus_mix", mix)):
            us = _median_us(partial(_score_one, scorer), prompts)
            emit("injection_us_per_4kb", us, engine=engine, text=name)
    words = [word for word in dict.fromkeys(fake.words(400)) if len(word) > 3]
    terms = tuple(words[:50]) + tuple(f"project {word}" for word in words[50:100])
    matcher = BannedTermMatcher(terms)
    for name, prompts in (("english_prose", prose), ("corpus_mix", mix)):
        emit("banned_us_per_4kb", _median_us(matcher.find, prompts), terms=len(terms), text=name)


if __name__ == "__main__":
    run()
