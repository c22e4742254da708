"""PII detection: what is found, what is left alone, offsets, limits, and the NER backends."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from smesh.config.schema import BUILTIN_ENTITIES, CustomEntity, LocalModel, PiiGuard
from smesh.extproc.guards import pii_ner as pii  # the NER loader imports its packages
from smesh.extproc.guards.pii import Finding, PiiDetector


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector.from_config(PiiGuard())


def found(detector: PiiDetector, text: str) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start : f.end]) for f in detector.find(text)]


POSITIVES = [
    ("email", "write to jane.doe+news@example.co.uk today", "EMAIL", "jane.doe+news@example.co.uk"),
    (
        "email-unicode",
        "Mail an jürgen.müller@beispiel.de bitte",
        "EMAIL",
        "jürgen.müller@beispiel.de",
    ),
    ("phone-intl", "call +44 20 7946 0958 now", "PHONE", "+44 20 7946 0958"),
    ("phone-intl-trunk", "Tel. +49 (0)30 901820 ab 9 Uhr", "PHONE", "+49 (0)30 901820"),
    ("phone-00", "dial 0044 20 7946 0958", "PHONE", "0044 20 7946 0958"),
    ("phone-us", "reach me at (202) 555-0143", "PHONE", "(202) 555-0143"),
    ("phone-us-ext", "office 202-555-0143 ext. 12", "PHONE", "202-555-0143 ext. 12"),
    ("phone-gb", "ring 020 7946 0958", "PHONE", "020 7946 0958"),
    ("phone-fr", "au 06 12 34 56 78", "PHONE", "06 12 34 56 78"),
    ("phone-fr-dots", "ou 06.12.34.56.78", "PHONE", "06.12.34.56.78"),
    ("phone-es", "móvil 612 34 56 78", "PHONE", "612 34 56 78"),
    ("phone-nl", "bel 06 12345678", "PHONE", "06 12345678"),
    ("phone-in", "cell 98765 43210", "PHONE", "98765 43210"),
    ("phone-bare-cue", "call me on 2025550143", "PHONE", "2025550143"),
    ("phone-bare-trunk", "Rückruf unter 03012345678", "PHONE", "03012345678"),
    ("card-spaced", "card 4111 1111 1111 1111 exp", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("card-dashed", "pay 5555-5555-5555-4444", "CREDIT_CARD", "5555-5555-5555-4444"),
    ("card-amex", "amex 3782 822463 10005", "CREDIT_CARD", "3782 822463 10005"),
    ("card-bare", "number 4012888888881881.", "CREDIT_CARD", "4012888888881881"),
    ("iban-compact", "IBAN DE89370400440532013000.", "IBAN", "DE89370400440532013000"),
    ("iban-spaced", "to GB82 WEST 1234 5698 7654 32 please", "IBAN", "GB82 WEST 1234 5698 7654 32"),
    ("ssn-dashed", "SSN 123-45-6789", "US_SSN", "123-45-6789"),
    ("ssn-spaced", "my ssn is 078 05 1120", "US_SSN", "078 05 1120"),
    ("ssn-bare-cue", "social security number: 123456789", "US_SSN", "123456789"),
    ("ipv4", "host 192.168.1.20 is down", "IP_ADDRESS", "192.168.1.20"),
    ("ipv4-loopback", "bind 127.0.0.1:8080", "IP_ADDRESS", "127.0.0.1"),
    ("ipv4-in-user-at", "ssh admin@10.0.0.1", "IP_ADDRESS", "10.0.0.1"),
    ("ipv6", "via 2001:db8::8a2e:370:7334 only", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
    ("ipv6-loopback", "listen on ::1 too", "IP_ADDRESS", "::1"),
    ("aws", "key AKIAIOSFODNN7EXAMPLE leaked", "SECRET", "AKIAIOSFODNN7EXAMPLE"),
    (
        "github",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789 x",
        "SECRET",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    ),
    ("slack", "xoxb-123456789012-abcdefABCDEF", "SECRET", "xoxb-123456789012-abcdefABCDEF"),
    ("stripe", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "SECRET", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    (
        "jwt",
        "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl;",
        "SECRET",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    ),
    ("password", "password=hunter22 and more", "SECRET", "hunter22"),
    ("password-json", '{"passwd": "correct horse"}', "SECRET", "correct horse"),
    ("api-key-yaml", "api_key: 9f8e7d6c5b4a", "SECRET", "9f8e7d6c5b4a"),
    ("token-weak-key", "token: a1b2c3d4e5", "SECRET", "a1b2c3d4e5"),
    ("secret-equals", "secret=abcdefgh", "SECRET", "abcdefgh"),
    ("bearer", "Authorization: Bearer abcdefghijklmnop1234", "SECRET", "abcdefghijklmnop1234"),
    (
        "pem",
        "-----BEGIN RSA PRIVATE KEY-----\nQUJD\n-----END RSA PRIVATE KEY-----",
        "SECRET",
        "-----BEGIN RSA PRIVATE KEY-----\nQUJD\n-----END RSA PRIVATE KEY-----",
    ),
    ("person-pair", "Ask Sarah Connor first", "PERSON", "Sarah Connor"),
    ("person-particles", "from Pauline de la Bailly", "PERSON", "Pauline de la Bailly"),
    ("person-hyphen", "Hans-Jürgen Müller wrote", "PERSON", "Hans-Jürgen Müller"),
    ("person-title", "Dear Mr. Okonkwo,", "PERSON", "Okonkwo"),
    ("person-title-unlisted", "Dr Priya Raghunathan called", "PERSON", "Priya Raghunathan"),
    ("person-my-name", "my name is Zorblax Quintavius", "PERSON", "Zorblax Quintavius"),
    ("person-regards", "Kind regards,\nSiobhan", "PERSON", "Siobhan"),
    ("person-possessive", "Sarah Connor's file", "PERSON", "Sarah Connor"),
]


@pytest.mark.parametrize(
    ("text", "entity", "value"), [p[1:] for p in POSITIVES], ids=[p[0] for p in POSITIVES]
)
def test_finds_entity(detector: PiiDetector, text: str, entity: str, value: str) -> None:
    """Each entity type is found with exactly the span a reader would redact."""
    assert (entity, value) in found(detector, text)


NEGATIVES = [
    ("version", "upgrade from 1.2.3 to v10.4.1.2"),
    ("version-cue", "version 1.2.3.4 is out"),
    ("chained-dots", "OID 1.3.6.1.4.1 and 10.0.19045.3803"),
    ("date-iso", "due 2024-03-15 at 14:30:00"),
    ("date-eu", "on 15/03/2024 or 15.03.2024"),
    ("uuid", "id 123e4567-e89b-12d3-a456-426614174000"),
    ("isbn", "ISBN 978-3-16-148410-0"),
    ("order-bad-luhn", "order 4111111111111112 shipped"),
    ("order-bare", "order 1234567890 shipped"),
    ("gps", "at 48.8584, 2.2945 and 83.3157385, 97.904349"),
    ("money", "$1,234,567.89 or 1.234.567,89 EUR"),
    ("git-sha", "commit 3f9a1c2b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a"),
    ("timestamp", "at 2010-04-17T20:11:05.421806 and epoch 1710513000"),
    ("port-status", "port 8443 returned 502"),
    ("math", "3.14159265358979 * 2 = 6.28318530717958"),
    ("cpp", "std::vector<int> v; a::b();"),
    ("capitalised-words", "The New York Times and Google Cloud Platform"),
    ("place", "Walk to Charlotte Street from Victoria Station"),
    ("common-word-pair", "May Day and Grace Period"),
    ("greeting-no-name", "Hi Team, Dear Customer"),
    ("code-password", "password = os.environ['DB_PASSWORD']"),
    ("prose-token", "The token: the smallest unit"),
    ("sk-phrase", "the sk-learn-compatible-estimators wrapper"),
]


@pytest.mark.parametrize("text", [n[1] for n in NEGATIVES], ids=[n[0] for n in NEGATIVES])
def test_hard_negative_untouched(detector: PiiDetector, text: str) -> None:
    """Numbers, words and code that only look like PII are not found."""
    assert found(detector, text) == []


def test_findings_sorted_and_disjoint(detector: PiiDetector) -> None:
    """Findings come sorted by start and never overlap, so redaction can splice them."""
    text = (
        "Sarah Connor <sarah@example.com> +44 20 7946 0958, AKIAIOSFODNN7EXAMPLE "
        "token=ghp_abcdefghijklmnopqrstuvwxyz0123456789 4111 1111 1111 1111 10.0.0.1"
    )
    findings = detector.find(text)
    assert len(findings) >= 6
    assert all(a.end <= b.start for a, b in itertools.pairwise(findings))


def test_offsets_are_characters_not_bytes(detector: PiiDetector) -> None:
    """Offsets index the str even after multi-byte characters (RE2 works on UTF-8 bytes)."""
    text = "Grüße aus Köln 漢字 — schreib an jürgen@example.de"
    [f] = detector.find(text)
    assert text[f.start : f.end] == "jürgen@example.de"


def test_lone_surrogates_do_not_crash(detector: PiiDetector) -> None:
    """A lone surrogate (possible after JSON parsing) is scanned around, not fatal."""
    text = "\ud800 mail x@example.com \udfff +44 20 7946 0958"
    assert found(detector, text) == [("EMAIL", "x@example.com"), ("PHONE", "+44 20 7946 0958")]


def test_entities_select_what_is_reported() -> None:
    """A policy that lists only EMAIL reports no phone, name or card."""
    only = PiiDetector.from_config(PiiGuard(entities=("EMAIL",)))
    text = "Sarah Connor, x@example.com, +44 20 7946 0958, 4111 1111 1111 1111"
    assert found(only, text) == [("EMAIL", "x@example.com")]


def test_custom_entity_found_without_listing_it() -> None:
    """A declared custom entity is detected even when entities keeps the default list."""
    guard = PiiGuard(custom=(CustomEntity(name="EMPLOYEE_ID", pattern=r"\bE-\d{6}\b"),))
    detector = PiiDetector.from_config(guard)
    assert "EMPLOYEE_ID" in detector.entities
    assert found(detector, "badge E-204981 of Ana") == [("EMPLOYEE_ID", "E-204981")]


def test_custom_entity_offsets_after_unicode() -> None:
    """Custom RE2 matches are mapped to str offsets too."""
    detector = PiiDetector(["X"], custom=(("PROJECT", r"PRJ-[0-9]+"),))
    text = "Über 漢字 PRJ-42 ok"
    assert found(detector, text) == [("PROJECT", "PRJ-42")]


def test_longer_overlapping_finding_wins() -> None:
    """When a custom pattern and a built-in overlap, the longer span is kept."""
    detector = PiiDetector(["EMAIL"], custom=(("HANDLE", r"jane"),))
    text = "jane.doe@example.com"
    assert found(detector, text) == [("EMAIL", "jane.doe@example.com")]


def test_unterminated_private_key_runs_over_its_body(detector: PiiDetector) -> None:
    """A key block without END is still redacted up to the first line of prose."""
    text = "-----BEGIN PRIVATE KEY-----\nQUJDREVG\nR0hJSktM\nThat was the key, sorry."
    assert found(detector, text) == [("SECRET", "-----BEGIN PRIVATE KEY-----\nQUJDREVG\nR0hJSktM")]


def test_orphan_end_marker_takes_the_body_before_it(detector: PiiDetector) -> None:
    """Text that starts mid-key (no BEGIN) still loses the base64 lines before END."""
    text = "see below:\nQUJDREVG\nR0hJSktM\n-----END RSA PRIVATE KEY-----"
    assert found(detector, text) == [
        ("SECRET", "QUJDREVG\nR0hJSktM\n-----END RSA PRIVATE KEY-----")
    ]


def test_analysis_reports_open_key_block(detector: PiiDetector) -> None:
    """A key block still running at the end of the text is reported open (the stream holds it)."""
    text = "ok\n-----BEGIN PRIVATE KEY-----\nQUJDREVG"
    assert detector.analyse(text).open_from == 3


ADVERSARIAL = {
    "one-long-token": "a" * (1 << 18),
    "digits": "7" * (1 << 18),
    "spaced-digits": "1 " * (1 << 17),
    "three-digit-groups": "555 " * (1 << 16),
    "dotted-digits": "1." * (1 << 17),
    "at-signs": "a@" * (1 << 17),
    "capitalised-words": "Aaaa " * (1 << 16),
    "name-pairs": "Sarah Connor " * (1 << 14),
    "colons": "ab:" * (1 << 16),
    "pem-begins": "-----BEGIN RSA PRIVATE KEY-----\n" * (1 << 13),
    "pem-ends": "-----END RSA PRIVATE KEY-----\n" * (1 << 13),
    "assignments": "password=" * (1 << 15),
    "combining-marks": "e\u0301" * (1 << 17),
    "lone-surrogates": "\ud800a" * (1 << 17),
    "cjk": "漢字" * (1 << 17),
}


@pytest.mark.parametrize("text", list(ADVERSARIAL.values()), ids=list(ADVERSARIAL))
def test_adversarial_input_finishes_fast(detector: PiiDetector, text: str) -> None:
    """256 KB of hostile input is scanned in seconds (quadratic work would take minutes)."""
    start = time.perf_counter()
    detector.find(text)
    assert time.perf_counter() - start < 8.0


def _spacy_pipeline(tmp_path: Path) -> Path:
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": [{"LOWER": "xqz"}, {"LOWER": "vontrapp"}]}])
    nlp.to_disk(tmp_path / "ner")
    return tmp_path / "ner"


def test_spacy_ner_finds_names_the_lists_lack(tmp_path: Path) -> None:
    """A local spaCy pipeline named in ner: adds the PERSON findings it makes."""
    path = _spacy_pipeline(tmp_path)
    guard = PiiGuard(ner=LocalModel(kind="spacy", path=str(path)))
    detector = PiiDetector.from_config(guard)
    text = "yesterday xqz vontrapp called"
    assert found(detector, text) == [("PERSON", "xqz vontrapp")]


def test_ner_path_missing_is_value_error(tmp_path: Path) -> None:
    """A ner: path that does not exist is a config error, not a crash at request time."""
    guard = PiiGuard(ner=LocalModel(kind="spacy", path=str(tmp_path / "absent")))
    with pytest.raises(ValueError, match="no such file"):
        PiiDetector.from_config(guard)


def test_ner_package_missing_is_value_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the spacy package, ner: kind spacy is refused with a clear message."""
    real = pii.importlib.import_module

    def no_spacy(name: str, package: str | None = None) -> object:
        if name == "spacy":
            raise ImportError("No module named 'spacy'")
        return real(name, package)

    monkeypatch.setattr(pii.importlib, "import_module", no_spacy)
    guard = PiiGuard(ner=LocalModel(kind="spacy", path=str(tmp_path)))
    with pytest.raises(ValueError, match="needs the spacy package"):
        PiiDetector.from_config(guard)


def _onnx_model(folder: Path) -> Path:
    """A token classifier whose logits are a lookup table: 'xqz' -> B-PER, 'vontrapp' -> I-PER."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    np = pytest.importorskip("numpy")
    helper, numpy_helper, tensor = onnx.helper, onnx.numpy_helper, onnx.TensorProto

    vocab = {"[UNK]": 0, "xqz": 1, "vontrapp": 2, "yesterday": 3, "called": 4}
    tokenizer = Tokenizer(models.WordLevel(vocab, "[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    table = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0], [5, 0, 0]], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["logits"], axis=0)],
        "ner",
        [helper.make_tensor_value_info("input_ids", tensor.INT64, [1, None])],
        [helper.make_tensor_value_info("logits", tensor.FLOAT, [1, None, 3])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    labels = {"id2label": {"0": "O", "1": "B-PER", "2": "I-PER"}}
    (folder / "config.json").write_text(json.dumps(labels))
    return folder


def test_onnx_ner_finds_names(tmp_path: Path) -> None:
    """A local ONNX token classifier named in ner: yields PERSON spans from its B-/I- tags."""
    path = _onnx_model(tmp_path / "onnx")
    detector = PiiDetector.from_config(PiiGuard(ner=LocalModel(kind="onnx", path=str(path))))
    text = "Yesterday Xqz Vontrapp called"
    assert detector.find(text) == [Finding("PERSON", 10, 22)]


def test_every_builtin_entity_has_a_positive_case() -> None:
    """The positive table above covers every built-in entity type."""
    assert {p[2] for p in POSITIVES} == set(BUILTIN_ENTITIES)
