"""Token counting, splitting and filler text with the simulator's real BPE tokenizer.

The tokenizer is the byte-level BPE in ``data/tokenizer.json`` (built offline by
:mod:`smesh.sim.build_tokenizer`), loaded once per process.

Chat prompt convention: a chat request's prompt is the concatenation, for every
message in order, of ``"{role}\\n{content}\\n"`` where list content contributes its
text parts joined with no separator (non-text parts such as images count nothing).
:func:`chat_prompt_text` renders it; ``prompt_tokens`` is the token count of that text.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from functools import cache, lru_cache
from pathlib import Path

from tokenizers import Tokenizer

from smesh.sim.build_tokenizer import WORDS

__all__ = [
    "TOKENIZER_PATH",
    "chat_prompt_text",
    "content_text",
    "count_tokens",
    "filler_pieces",
    "filler_text",
    "load_tokenizer",
    "split_tokens",
]

TOKENIZER_PATH = Path(__file__).parent / "data" / "tokenizer.json"


@cache
def load_tokenizer(path: Path = TOKENIZER_PATH) -> Tokenizer:
    """Load the tokenizer file once; it is read from disk, never downloaded."""
    return Tokenizer.from_file(str(path))


def count_tokens(text: str) -> int:
    """Number of BPE tokens in ``text`` (no special tokens added)."""
    if not text:
        return 0
    return len(load_tokenizer().encode(text, add_special_tokens=False).ids)


def split_tokens(text: str) -> list[str]:
    """Cut ``text`` into token-sized pieces whose concatenation is ``text`` exactly.

    Pieces start where tokens start; tokens that share a character (bytes of one
    multi-byte character) stay in one piece, so every piece is valid text.
    """
    if not text:
        return []
    offsets = load_tokenizer().encode(text, add_special_tokens=False).offsets
    starts = sorted({start for start, _ in offsets if 0 < start < len(text)})
    bounds = [0, *starts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if a < b]


def content_text(content: object) -> str:
    """The text of an OpenAI message ``content``: a string, or text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


def chat_prompt_text(messages: Sequence[Mapping[str, object]]) -> str:
    """Render chat messages as ``"{role}\\n{content}\\n"`` each (the counting convention)."""
    return "".join(
        f"{msg.get('role', '')}\n{content_text(msg.get('content'))}\n" for msg in messages
    )


@cache
def _single_token_words() -> tuple[str, tuple[str, ...]]:
    """A one-token opening word and the one-token ``" word"`` pieces that follow it."""
    tokenizer = load_tokenizer()

    def one_token(text: str) -> bool:
        return len(tokenizer.encode(text, add_special_tokens=False).ids) == 1

    following = tuple(f" {word}" for word in WORDS if one_token(f" {word}"))
    opening = next((word for word in ("The", *WORDS) if one_token(word)), None)
    if opening is None or not following:  # pragma: no cover - shipped file merges words
        raise RuntimeError(f"{TOKENIZER_PATH} merges no common words; rebuild it")
    return opening, following


@lru_cache(maxsize=64)
def filler_pieces(tokens: int) -> tuple[str, ...]:
    """``tokens`` one-token pieces of deterministic English-ish filler."""
    if tokens <= 0:
        return ()
    opening, following = _single_token_words()
    rest = (following[(index * 7) % len(following)] for index in range(1, tokens))
    return (opening, *rest)


def filler_text(tokens: int) -> str:
    """Deterministic filler text that is exactly ``tokens`` tokens long."""
    return "".join(filler_pieces(tokens))
