"""Prompt token estimates: real tokenizers from local files, one chat convention with the sim."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from tokenizers import Tokenizer as HfTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from smesh.config.schema import Tokenizer
from smesh.extproc.tokens import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    estimate_prompt_tokens,
    load_counter,
    prompt_text,
    prompt_texts,
)
from smesh.sim.answers import embeddings_body, plan_generation
from smesh.sim.protocol import parse_chat, parse_completion, parse_embeddings
from smesh.sim.settings import SimSettings
from smesh.sim.tokenizer import chat_prompt_text, count_tokens

BUILTIN = Tokenizer()
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {
        "role": "user",
        "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Zürich?"}],
    },
    {"role": "assistant", "content": "Cloudy, 日本語 too."},
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
]
TRAIN_TEXT = "the cat sat on the mat. the dog sat on the log. then the cat and the dog ate."


def write_tiktoken(path: Path, merges: list[bytes]) -> Path:
    """A ``.tiktoken`` file: every single byte (ranks 0-255), then ``merges`` in order."""
    tokens = [bytes([value]) for value in range(256)] + merges
    lines = [f"{base64.b64encode(token).decode()} {rank}" for rank, token in enumerate(tokens)]
    path.write_text("\n".join(lines) + "\n")
    return path


def train_hf(path: Path) -> HfTokenizer:
    """Train a tiny byte-level BPE on a sentence and save it as ``tokenizer.json``."""
    tokenizer = HfTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator([TRAIN_TEXT] * 20, trainer=trainer)
    tokenizer.save(str(path))
    return tokenizer


def test_builtin_counter_is_the_simulators_tokenizer() -> None:
    """The builtin counter counts exactly like the simulator's count_tokens."""
    counter = load_counter(BUILTIN)
    for text in ("", "hello world", "Grüße, 日本語!", "the the the  \n\n x"):
        assert counter.count(text) == count_tokens(text)


def test_load_counter_is_cached_per_spec() -> None:
    """Equal specs share one counter; the file is read once."""
    assert load_counter(Tokenizer()) is load_counter(Tokenizer(kind="builtin"))


def test_chat_prompt_text_follows_the_simulators_convention() -> None:
    """Chat prompt text is the simulator's chat_prompt_text of the messages."""
    assert prompt_text(CHAT_PATH, {"messages": MESSAGES}) == chat_prompt_text(MESSAGES)


def test_chat_estimate_equals_simulated_prompt_usage() -> None:
    """The builtin estimate of a chat body equals the simulator's prompt_tokens."""
    body = {"model": "m", "messages": MESSAGES}
    gen = plan_generation(parse_chat(body, SimSettings()), SimSettings())
    assert estimate_prompt_tokens(CHAT_PATH, body, load_counter(BUILTIN)) == gen.prompt_tokens


@pytest.mark.parametrize(
    "prompt",
    ["one prompt about the weather", ["first prompt", "second, longer prompt ab", "c"]],
    ids=["string", "list"],
)
def test_completion_estimate_equals_simulated_prompt_usage(prompt: str | list[str]) -> None:
    """Completions count each prompt alone and sum, as the simulator reports usage."""
    body = {"model": "m", "prompt": prompt}
    gen = plan_generation(parse_completion(body, SimSettings()), SimSettings())
    assert (
        estimate_prompt_tokens(COMPLETIONS_PATH, body, load_counter(BUILTIN)) == gen.prompt_tokens
    )


@pytest.mark.parametrize("inputs", ["embed me", ["embed", "these two"]], ids=["string", "list"])
def test_embeddings_estimate_equals_simulated_usage(inputs: str | list[str]) -> None:
    """Embeddings count their input(s) like the simulator's usage."""
    body = {"model": "m", "input": inputs}
    answer, _ = embeddings_body(parse_embeddings(body, SimSettings()))
    prompt_tokens = orjson.loads(answer)["usage"]["prompt_tokens"]
    assert estimate_prompt_tokens(EMBEDDINGS_PATH, body, load_counter(BUILTIN)) == prompt_tokens


def test_list_prompts_join_without_separator() -> None:
    """prompt_text joins list prompts as they are; prompt_texts keeps them apart."""
    body = {"prompt": ["ab", "cd"]}
    assert prompt_texts(COMPLETIONS_PATH, body) == ("ab", "cd")
    assert prompt_text(COMPLETIONS_PATH, body) == "abcd"
    assert prompt_text(EMBEDDINGS_PATH, {"input": ["x", "y"]}) == "xy"


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("/v1/models", {"messages": MESSAGES}),
        (CHAT_PATH, {"messages": "not a list"}),
        (COMPLETIONS_PATH, {"prompt": 42}),
        (COMPLETIONS_PATH, {"prompt": [1, 2, 3]}),
        (EMBEDDINGS_PATH, {}),
    ],
    ids=["unknown-endpoint", "bad-messages", "int-prompt", "token-id-prompt", "no-input"],
)
def test_malformed_or_unknown_bodies_estimate_zero(endpoint: str, body: dict[str, Any]) -> None:
    """Bodies without countable text estimate 0 instead of raising."""
    assert estimate_prompt_tokens(endpoint, body, load_counter(BUILTIN)) == 0


def test_hf_counter_loads_a_local_tokenizer_json(tmp_path: Path) -> None:
    """An hf spec counts with the tokenizer.json at its path, no special tokens added."""
    path = tmp_path / "tokenizer.json"
    trained = train_hf(path)
    counter = load_counter(Tokenizer(kind="hf", path=str(path)))
    for text in ("the cat sat on the mat", "zebra quartz", ""):
        assert counter.count(text) == len(trained.encode(text, add_special_tokens=False).ids)
    assert counter.count("the cat") < len("the cat")  # merges learned from the text apply


def test_tiktoken_counter_applies_local_merges(tmp_path: Path) -> None:
    """A tiktoken spec counts with the ranks in a local .tiktoken file and cl100k splitting."""
    path = write_tiktoken(tmp_path / "tiny.tiktoken", [b"th", b"the", b" the"])
    counter = load_counter(Tokenizer(kind="tiktoken", path=str(path)))
    assert counter.count("the") == 1
    assert counter.count("the the") == 2
    assert counter.count("then") == 2  # "the" + "n"
    assert counter.count("日本") == 6  # no merges: one token per UTF-8 byte
    assert counter.count("<|endoftext|>") == len("<|endoftext|>")  # ordinary text
    assert counter.count("") == 0


@pytest.mark.parametrize("kind", ["hf", "tiktoken"])
def test_missing_file_names_the_path(tmp_path: Path, kind: str) -> None:
    """A missing tokenizer file raises ValueError naming the path."""
    path = str(tmp_path / "absent" / "tok.file")
    with pytest.raises(ValueError, match=re.escape(path)):
        load_counter(Tokenizer(kind=kind, path=path))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "content"),
    [
        ("hf", "{not json"),
        ("tiktoken", "!!notbase64 0\n"),
        ("tiktoken", "YQ==\n"),
        ("tiktoken", "\n"),
    ],
    ids=["hf-bad-json", "tiktoken-bad-base64", "tiktoken-no-rank", "tiktoken-empty"],
)
def test_unreadable_file_names_the_path(tmp_path: Path, kind: str, content: str) -> None:
    """A corrupt tokenizer file raises ValueError naming the path."""
    path = tmp_path / "broken.file"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_counter(Tokenizer(kind=kind, path=str(path)))  # type: ignore[arg-type]


def test_the_builtin_counter_counts_like_the_simulator() -> None:
    """The builtin BPE through tiktoken ranks gives the same counts as the tokenizers library."""
    from smesh.extproc.estimate import CALIBRATION_TEXTS  # noqa: PLC0415
    from smesh.sim.tokenizer import count_tokens  # noqa: PLC0415

    counter = load_counter(BUILTIN)
    for text in (*CALIBRATION_TEXTS, "The quick brown fox " * 50, "  spaces\t\ttabs\n\nlines  "):
        assert counter.count(text) == count_tokens(text), text


def test_the_calibrated_bound_covers_every_calibration_text() -> None:
    """bound(bytes) is at least the real count for each dense sample, and for plain prose."""
    from smesh.extproc.estimate import CALIBRATION_TEXTS, PromptEstimator  # noqa: PLC0415

    estimator = PromptEstimator.for_counter(load_counter(BUILTIN))
    for text in (*CALIBRATION_TEXTS, "plain words " * 300):
        assert estimator.bound(len(text.encode())) >= load_counter(BUILTIN).count(text)
