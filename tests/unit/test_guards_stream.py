"""Streamed answers: any chunking gives what redacting the whole answer gives, text flows early,
and what is held stays bounded."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smesh.config.schema import PiiAction, PiiGuard
from smesh.extproc.guards.pii import PiiDetector
from smesh.extproc.guards.redact import Redactor
from smesh.extproc.guards.stream import BATCH, CAP, HOLD, StreamScanner

DETECTOR = PiiDetector.from_config(PiiGuard())
KEY = b"stream-test-key"
PROMPT = "I am Sarah Connor, write to sarah.connor@example.com or +44 20 7946 0958"

ENTITIES = [
    "sarah.connor@example.com",
    "jürgen.müller@beispiel.de",
    "+44 20 7946 0958",
    "(0161) 496 0066",
    "202-555-0143 ext. 12",
    "06.12.34.56.78",
    "call 2025550143",
    "123-45-6789",
    "SSN 123456789",
    "4111 1111 1111 1111",
    "DE89 3704 0044 0532 0130 00",
    "DE89370400440532013000",
    "192.168.1.1",
    "2001:db8::8a2e:370:7334",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "password=hunter22",
    'api_key: "s3cr3t value"',
    "Authorization: Bearer abcdefghijklmnop1234567890",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\nQUJD\n-----END RSA PRIVATE KEY-----",
    "-----BEGIN PRIVATE KEY-----\nQUJDREVG\nThat was it.",
    "Dear Mr. Smith,",
    "my name is Xavier Quentin",
    "Regards,\nSarah Connor",
    "Pauline de la Bailly",
    "Hans-Jürgen Müller",
    "<EMAIL_1>",
    "<PERSON_1>",
    "<PHONE_7>",
]
FILLER = [
    "the", "quick", "Brown", "fox", "and", "The", "Report", "New", "York", "in", "2024",
    "2024-03-15", "version 1.2.3.4", "v10.4.1.2", "12:30", "x", ",", ".", "\n", "  ", "Dr.", "(",
    ")", "+", "-", "Grüße", "漢字", "order 4111111111111112", "48.8584, 2.2945",
]  # fmt: skip
SEPARATORS = [" ", " ", "", "\n", ", ", ". "]

texts = st.lists(
    st.tuples(st.sampled_from(ENTITIES + FILLER + FILLER), st.sampled_from(SEPARATORS)),
    min_size=1,
    max_size=30,
).map(lambda parts: "".join(p + s for p, s in parts))


def chunked(text: str, sizes: list[int]) -> list[str]:
    chunks, pos, k = [], 0, 0
    while pos < len(text):
        size = sizes[k % len(sizes)]
        chunks.append(text[pos : pos + size])
        pos += size
        k += 1
    return chunks


def answer_redactor(action: PiiAction) -> Redactor:
    """The answer side of a request whose prompt already issued <PERSON_1>, <EMAIL_1>, ..."""
    prompt = Redactor(DETECTOR, "redact", KEY)
    prompt.apply(PROMPT)
    return prompt.with_action(action)


def whole(text: str, action: PiiAction, restore: bool) -> str:
    redactor = answer_redactor(action)
    out = redactor.apply(text)
    return redactor.restore(out) if restore else out


def streamed(text: str, sizes: list[int], action: PiiAction, restore: bool) -> str:
    scanner = StreamScanner(answer_redactor(action), restore=restore)
    return "".join(scanner.feed(c) for c in chunked(text, sizes)) + scanner.flush()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, sizes=st.lists(st.integers(1, 70), min_size=1, max_size=12))
def test_any_chunking_equals_whole_text_redaction(text: str, sizes: list[int]) -> None:
    """Redacting the stream chunk by chunk gives exactly what redacting it whole gives."""
    assert streamed(text, sizes, "redact", False) == whole(text, "redact", False)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, sizes=st.lists(st.integers(1, 70), min_size=1, max_size=12))
def test_any_chunking_equals_whole_text_with_restore(text: str, sizes: list[int]) -> None:
    """With restore, split placeholders still map back and new PII is still redacted."""
    assert streamed(text, sizes, "redact", True) == whole(text, "redact", True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, sizes=st.lists(st.integers(1, 70), min_size=1, max_size=12))
def test_any_chunking_equals_whole_text_hashed(text: str, sizes: list[int]) -> None:
    """The hash action streams to the same tokens as hashing the whole answer."""
    assert streamed(text, sizes, "hash", False) == whole(text, "hash", False)


LONG = " ".join(ENTITIES + FILLER) * 2


@pytest.mark.parametrize("size", range(1, 65), ids=lambda n: f"{n}-chars")
def test_fixed_chunk_sizes(size: int) -> None:
    """Every entity split at every offset of a fixed chunk size is still redacted."""
    assert streamed(LONG, [size], "redact", True) == whole(LONG, "redact", True)


def test_no_partial_entity_is_ever_released() -> None:
    """One character at a time, no piece of the email is ever sent before it is replaced."""
    scanner = StreamScanner(Redactor(DETECTOR, "redact"))
    sent = ""
    for ch in "Contact sarah.connor@example.com today, or later. " + "filler " * 30:
        sent += scanner.feed(ch)
        assert "sarah" not in sent and "example" not in sent and "connor" not in sent
    assert "<EMAIL_1>" in sent + scanner.flush()


def test_text_flows_before_the_answer_ends() -> None:
    """Plain prose is released as it streams; only a bounded tail is ever held."""
    scanner = StreamScanner(Redactor(DETECTOR, "redact"))
    prose = "the model keeps talking about nothing in particular " * 40
    sent, first_at = "", None
    for i in range(0, len(prose), 5):
        sent += scanner.feed(prose[i : i + 5])
        assert scanner.held <= HOLD + BATCH + 5 + len("particular ")
        if sent and first_at is None:
            first_at = i
    assert first_at is not None and first_at <= HOLD + BATCH + 20
    assert sent + scanner.flush() == prose


def test_split_placeholder_is_restored() -> None:
    """A placeholder cut across deltas ("<EMA" + "IL_1>") still maps back."""
    scanner = StreamScanner(answer_redactor("redact"), restore=True)
    out = scanner.feed("Write to <EMA") + scanner.feed("IL_1> today.") + scanner.flush()
    assert out == "Write to sarah.connor@example.com today."


def test_unterminated_key_is_capped_and_never_released() -> None:
    """A private key longer than CAP is held at most CAP, then replaced, its body never sent."""
    scanner = StreamScanner(Redactor(DETECTOR, "redact"))
    line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2\n"
    sent = scanner.feed("Here it is:\n-----BEGIN PRIVATE KEY-----\n")
    for _ in range(2 * CAP // len(line)):
        sent += scanner.feed(line)
        assert scanner.held <= CAP + len(line)
    sent += scanner.feed("-----END PRIVATE KEY-----\nThat was it.") + scanner.flush()
    assert "QUJD" not in sent
    assert sent.startswith("Here it is:\n<SECRET_1>")
    assert sent.endswith("That was it.")


def test_capped_key_inside_a_json_string() -> None:
    """A key pasted in a JSON string (escaped newlines) is capped the same way."""
    scanner = StreamScanner(Redactor(DETECTOR, "redact"))
    line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2\\n"
    sent = scanner.feed('{"key": "-----BEGIN PRIVATE KEY-----\\n')
    for _ in range(2 * CAP // len(line)):
        sent += scanner.feed(line)
        assert scanner.held <= CAP + len(line)
    sent += scanner.feed('-----END PRIVATE KEY-----\\n"} done.') + scanner.flush()
    assert sent == '{"key": "<SECRET_1>\\n"} done.'


def test_overlong_token_is_capped_and_never_released() -> None:
    """A token-shaped secret longer than CAP becomes a placeholder; none of it is sent."""
    scanner = StreamScanner(Redactor(DETECTOR, "redact"))
    sent = scanner.feed("token ghp_")
    for _ in range(CAP // 50 + 10):
        sent += scanner.feed("a1b2c3d4e5" * 5)
        assert scanner.held <= CAP + 50
    sent += scanner.feed(" and the rest.") + scanner.flush()
    assert "a1b2" not in sent
    assert sent == "token <SECRET_1> and the rest."


def test_block_releases_nothing_once_found() -> None:
    """With block, nothing more is released once PII is seen, and the redactor says blocked."""
    redactor = Redactor(DETECTOR, "block")
    scanner = StreamScanner(redactor)
    text = "harmless words " * 20 + "mail me at a@example.com " + "more words " * 20
    sent = "".join(scanner.feed(text[i : i + 7]) for i in range(0, len(text), 7))
    sent += scanner.flush()
    assert redactor.blocked
    assert "a@example.com" not in sent
    assert text.startswith(sent)


def test_log_releases_unchanged_and_counts() -> None:
    """With log, the answer streams unchanged and each entity is counted once."""
    redactor = Redactor(DETECTOR, "log")
    scanner = StreamScanner(redactor)
    text = "mail a@example.com or b@example.com " * 3
    sent = "".join(scanner.feed(text[i : i + 3]) for i in range(0, len(text), 3))
    assert sent + scanner.flush() == text
    assert redactor.counts == {"EMAIL": 6}


def test_off_without_restore_passes_through() -> None:
    """With nothing to scan or restore, each delta is released at once."""
    scanner = StreamScanner(Redactor(DETECTOR, "off"))
    assert scanner.feed("a@example.com ") == "a@example.com "
    assert scanner.held == 0
