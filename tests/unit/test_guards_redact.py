"""Per-request PII actions: numbering, hashing, block/log/off, restore across prompt and answer."""

from __future__ import annotations

import pytest

from smesh.config.schema import PiiGuard
from smesh.extproc.guards.pii import Finding, PiiDetector
from smesh.extproc.guards.redact import Redactor

KEY = b"test-key-not-secret"


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector.from_config(PiiGuard())


def test_redact_numbers_per_type_and_reuses_numbers(detector: PiiDetector) -> None:
    """Placeholders count per entity type, and a repeated value keeps its number."""
    r = Redactor(detector, "redact")
    text = "a@example.com, b@example.com, a@example.com; call +44 20 7946 0958"
    assert r.apply(text) == "<EMAIL_1>, <EMAIL_2>, <EMAIL_1>; call <PHONE_1>"


def test_numbering_spans_calls_within_a_request(detector: PiiDetector) -> None:
    """Two messages of one request share numbering: the same person is the same placeholder."""
    r = Redactor(detector, "redact")
    assert r.apply("from Sarah Connor") == "from <PERSON_1>"
    assert r.apply("to Sarah Connor and John Smith") == "to <PERSON_1> and <PERSON_2>"


def test_counts_every_occurrence(detector: PiiDetector) -> None:
    """counts records each occurrence by type, repeats included."""
    r = Redactor(detector, "redact")
    r.apply("a@example.com a@example.com 4111 1111 1111 1111")
    assert r.counts == {"EMAIL": 2, "CREDIT_CARD": 1}


def test_hash_is_keyed_and_stable(detector: PiiDetector) -> None:
    """hash gives the same token for a value across requests, and another key gives another."""
    text = "mail a@example.com"
    first = Redactor(detector, "hash", KEY).apply(text)
    again = Redactor(detector, "hash", KEY).apply(text)
    other = Redactor(detector, "hash", b"another-key").apply(text)
    assert first == again
    assert first != other
    assert first.startswith("mail <EMAIL:") and len(first) == len("mail <EMAIL:0123456789>")


def test_hash_without_key_refused(detector: PiiDetector) -> None:
    """An unkeyed hash of a phone number could be reversed by guessing: refused."""
    with pytest.raises(ValueError, match="key"):
        Redactor(detector, "hash")


def test_block_flags_and_leaves_text(detector: PiiDetector) -> None:
    """block leaves the text as it is and reports blocked with the types found."""
    r = Redactor(detector, "block")
    text = "my card 4111 1111 1111 1111"
    assert r.apply(text) == text
    assert r.blocked
    assert r.counts == {"CREDIT_CARD": 1}


def test_block_without_findings_is_not_blocked(detector: PiiDetector) -> None:
    """Clean text does not trip block."""
    r = Redactor(detector, "block")
    r.apply("nothing to see here, version 1.2.3")
    assert not r.blocked


def test_log_counts_and_leaves_text(detector: PiiDetector) -> None:
    """log counts what it sees and changes nothing."""
    r = Redactor(detector, "log")
    text = "mail a@example.com"
    assert r.apply(text) == text
    assert r.counts == {"EMAIL": 1}
    assert not r.blocked


def test_off_scans_nothing(detector: PiiDetector) -> None:
    """off neither changes nor counts."""
    r = Redactor(detector, "off")
    text = "mail a@example.com"
    assert r.apply(text) is text
    assert not r.counts


def test_restore_maps_prompt_placeholders_back(detector: PiiDetector) -> None:
    """The answer's placeholders from this request's prompt become the caller's values again."""
    prompt = Redactor(detector, "redact")
    assert prompt.apply("I am Sarah Connor, a@example.com") == "I am <PERSON_1>, <EMAIL_1>"
    answer = prompt.with_action("off")
    assert answer.restore("Dear <PERSON_1>, we wrote to <EMAIL_1>.") == (
        "Dear Sarah Connor, we wrote to a@example.com."
    )


def test_restore_leaves_invented_and_unissued_placeholders(detector: PiiDetector) -> None:
    """Placeholders the model made up, or numbers never issued, stay as they are."""
    prompt = Redactor(detector, "redact")
    prompt.apply("a@example.com")
    text = "<EMAIL_2> <PHONE_1> <EMAIL_1x> <email_1> <EMAIL_1>"
    assert prompt.with_action("off").restore(text) == (
        "<EMAIL_2> <PHONE_1> <EMAIL_1x> <email_1> a@example.com"
    )


def test_answer_side_pii_stays_redacted_under_restore(detector: PiiDetector) -> None:
    """PII the model produced is numbered on from the prompt's and is never restored."""
    prompt = Redactor(detector, "redact")
    prompt.apply("write to a@example.com")
    answer = prompt.with_action("redact")
    redacted = answer.apply("I copied b@example.com and a@example.com")
    assert redacted == "I copied <EMAIL_2> and <EMAIL_1>"
    assert answer.restore(redacted) == "I copied <EMAIL_2> and a@example.com"


def test_with_action_keeps_own_counts_and_block(detector: PiiDetector) -> None:
    """The answer side counts and blocks on its own; the prompt side's figures are unchanged."""
    prompt = Redactor(detector, "redact")
    prompt.apply("a@example.com")
    answer = prompt.with_action("block")
    answer.apply("+44 20 7946 0958")
    assert answer.blocked and answer.counts == {"PHONE": 1}
    assert not prompt.blocked and prompt.counts == {"EMAIL": 1}


def test_rewrite_uses_given_findings(detector: PiiDetector) -> None:
    """rewrite applies the action to findings made elsewhere (the stream finds them in context)."""
    r = Redactor(detector, "redact")
    assert r.rewrite("id 42 here", [Finding("CUSTOM", 3, 5)]) == "id <CUSTOM_1> here"


def test_surrogates_survive_redaction(detector: PiiDetector) -> None:
    """Lone surrogates pass through redaction and hashing unharmed."""
    text = "\ud800 a@example.com \udfff"
    assert Redactor(detector, "redact").apply(text) == "\ud800 <EMAIL_1> \udfff"
    assert Redactor(detector, "hash", KEY).apply(text).startswith("\ud800 <EMAIL:")
