"""PII detector, redactor and stream scanner: quality on the labelled corpus, and speed.

Run: ``.venv/bin/python -m bench.guards`` (every guard benchmark) or
``.venv/bin/python -m bench.guards.pii``.

One JSON line per figure, ``{"bench": "guards", "figure": ..., "value": ...}``:

- ``pii_recall`` / ``pii_precision`` per ``entity`` (and ``ALL``) on
  ``tests/corpora/pii/cases.jsonl``; ``pii_negatives_untouched``: share of the hard
  negatives that redaction leaves unchanged. The corpus was built alongside the detector
  (its false positives were fixed as they were found): training-set figures, not a
  held-out estimate.
- ``pii_detector_build_ms``: ``PiiDetector.from_config`` with the default entities (name
  lists loaded, patterns compiled; once per policy version).
- ``pii_us_per_4kb``: median µs to detect and redact one 4 KB prompt, per ``text``:
  ``english_prose`` (Faker paragraphs: the common case) and ``corpus_mix`` (corpus cases
  run together: an entity every ~60 characters, dates, versions and ids between: a bad case).
- ``pii_redact_mb_per_s``: the same work as throughput, per ``text``.
- ``pii_stream_us_per_chunk``: ``StreamScanner.feed`` (and the final ``flush``) over 4 KB
  answers cut into 3-20 character deltas; ``stat`` is ``mean`` (the cost per delta) or
  ``p99`` (the deltas that trigger a scan of the held window).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from faker import Faker

from smesh.config.schema import PiiGuard
from smesh.extproc.guards.pii import PiiDetector
from smesh.extproc.guards.redact import Redactor
from smesh.extproc.guards.stream import StreamScanner

CASES = Path(__file__).resolve().parents[2] / "tests" / "corpora" / "pii" / "cases.jsonl"
PROMPT_CHARS = 4096
PROMPTS = 60
ROUNDS = 3


def emit(figure: str, value: float, **labels: Any) -> None:
    print(json.dumps({"bench": "guards", "figure": figure, **labels, "value": value}), flush=True)


def _cases() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line]


def _quality(detector: PiiDetector, cases: Sequence[dict[str, Any]]) -> None:
    expected: Counter[str] = Counter()
    covered: Counter[str] = Counter()
    reported: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    negatives = untouched = 0
    for case in cases:
        text = case["text"]
        findings = detector.find(text)
        if case["kind"] == "negative":
            negatives += 1
            untouched += not findings
            continue
        spans = [(e["type"], e["start"], e["start"] + len(e["value"])) for e in case["entities"]]
        for entity, start, end in spans:
            expected[entity] += 1
            covered[entity] += any(
                f.entity == entity and f.start <= start and f.end >= end for f in findings
            )
        for f in findings:
            reported[f.entity] += 1
            correct[f.entity] += any(
                e == f.entity and f.start < end and f.end > start for e, start, end in spans
            )
    for entity in sorted(expected):
        emit("pii_recall", round(covered[entity] / expected[entity], 4), entity=entity)
    emit("pii_recall", round(sum(covered.values()) / sum(expected.values()), 4), entity="ALL")
    for entity in sorted(reported):
        emit("pii_precision", round(correct[entity] / reported[entity], 4), entity=entity)
    emit("pii_precision", round(sum(correct.values()) / sum(reported.values()), 4), entity="ALL")
    emit("pii_negatives_untouched", round(untouched / negatives, 4))


def _texts(pieces: Sequence[str], rng: random.Random) -> list[str]:
    """PROMPTS texts of PROMPT_CHARS characters, each made of randomly chosen pieces."""
    texts = []
    for _ in range(PROMPTS):
        text = ""
        while len(text) < PROMPT_CHARS:
            text += rng.choice(pieces) + " "
        texts.append(text[:PROMPT_CHARS])
    return texts


def _timings_us(call: Callable[[str], object], texts: Sequence[str]) -> list[float]:
    """Wall time of one call per text, ROUNDS times, after a warm-up round."""
    for text in texts:
        call(text)
    samples = []
    for _ in range(ROUNDS):
        for text in texts:
            start = time.perf_counter_ns()
            call(text)
            samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def _stream_us(detector: PiiDetector, texts: Sequence[str], rng: random.Random) -> list[float]:
    """Wall time of each feed (and flush) over every text cut into 3-20 character deltas."""
    samples = []
    for text in texts:
        scanner = StreamScanner(Redactor(detector, "redact"))
        pos = 0
        while pos < len(text):
            size = rng.randint(3, 20)
            delta = text[pos : pos + size]
            start = time.perf_counter_ns()
            scanner.feed(delta)
            samples.append((time.perf_counter_ns() - start) / 1000)
            pos += size
        start = time.perf_counter_ns()
        scanner.flush()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def run() -> None:
    cases = _cases()
    start = time.perf_counter()
    detector = PiiDetector.from_config(PiiGuard())
    emit("pii_detector_build_ms", round((time.perf_counter() - start) * 1000, 1))
    _quality(detector, cases)

    rng = random.Random(7)
    fake = Faker("en_US")
    fake.seed_instance(7)
    texts = {
        "english_prose": _texts([fake.paragraph(nb_sentences=5) for _ in range(200)], rng),
        "corpus_mix": _texts([c["text"] for c in cases], rng),
    }
    for name, prompts in texts.items():
        samples = _timings_us(lambda t: Redactor(detector, "redact").apply(t), prompts)
        emit("pii_us_per_4kb", round(statistics.median(samples), 1), text=name)
        mb_per_s = PROMPT_CHARS * len(samples) / sum(samples)  # chars per µs = MB per s
        emit("pii_redact_mb_per_s", round(mb_per_s, 2), text=name)
    for name, answers in texts.items():
        samples = _stream_us(detector, answers[:20], rng)
        emit("pii_stream_us_per_chunk", round(statistics.fmean(samples), 1), text=name, stat="mean")
        p99 = statistics.quantiles(samples, n=100)[98]
        emit("pii_stream_us_per_chunk", round(p99, 1), text=name, stat="p99")


if __name__ == "__main__":
    run()
