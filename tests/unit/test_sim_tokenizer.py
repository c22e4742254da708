"""The simulator's tokenizer: a real byte-level BPE, shipped in the package, rebuilt identically."""

from __future__ import annotations

import random
import string

import pytest
from tokenizers import Tokenizer

from smesh.sim.build_tokenizer import VOCAB_SIZE, build_tokenizer
from smesh.sim.tokenizer import (
    TOKENIZER_PATH,
    chat_prompt_text,
    content_text,
    count_tokens,
    filler_text,
    load_tokenizer,
    split_tokens,
)


def test_tokenizer_file_loads_offline_and_is_small() -> None:
    """The packaged tokenizer.json loads from disk alone and stays well under 400 KB."""
    assert TOKENIZER_PATH.stat().st_size < 400_000
    tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
    assert tokenizer.get_vocab_size() == VOCAB_SIZE
    assert load_tokenizer() is load_tokenizer()  # read once per process


def test_build_tokenizer_is_deterministic() -> None:
    """Training again gives byte-for-byte the committed tokenizer.json."""
    rebuilt = build_tokenizer().to_str(pretty=False) + "\n"
    assert rebuilt == TOKENIZER_PATH.read_text(encoding="utf-8")


def test_common_words_cost_fewer_tokens_than_random_characters() -> None:
    """BPE merges: a repeated common word is cheaper than random characters of equal length."""
    words = " ".join(["the"] * 50)
    rng = random.Random(7)
    noise = "".join(rng.choice(string.ascii_letters + string.digits) for _ in words)
    assert count_tokens(words) == 50
    assert count_tokens(noise) > 3 * count_tokens(words)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("the", 1), (" the", 1), ("the model", 2), ("ab", 2)],
    ids=["empty", "word", "spaced-word", "two-words", "unmerged"],
)
def test_known_counts(text: str, tokens: int) -> None:
    """Counts are the tokenizer's own: merged words are one token, rare pairs are not."""
    assert count_tokens(text) == tokens


@pytest.mark.parametrize(
    "text",
    ["Hello, world!", "Grüße 世界 🚀 naïve", "  spaces\tand\nnewlines  ", "a"],
    ids=["ascii", "unicode", "whitespace", "one-char"],
)
def test_split_tokens_round_trips(text: str) -> None:
    """Token pieces concatenate back to the exact text, at most one piece per token."""
    pieces = split_tokens(text)
    assert "".join(pieces) == text
    assert all(pieces)
    assert len(pieces) <= count_tokens(text)


@pytest.mark.parametrize("tokens", [1, 2, 16, 300])
def test_filler_text_has_exactly_the_asked_tokens(tokens: int) -> None:
    """Filler text is deterministic and exactly ``tokens`` tokens long."""
    assert count_tokens(filler_text(tokens)) == tokens
    assert filler_text(tokens) == filler_text(tokens)


def test_chat_prompt_convention() -> None:
    """A chat prompt is each message's role and text joined as "role\\ncontent\\n"."""
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "image_url"}]},
        {"role": "user", "content": [{"type": "text", "text": "there"}]},
    ]
    assert chat_prompt_text(messages) == "system\nBe brief.\nuser\nHi \nuser\nthere\n"
    assert content_text(None) == ""
