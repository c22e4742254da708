"""Optional NER models (``ner:``, spaCy or ONNX, loaded from a local path only) that add
PERSON findings the name lists miss."""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from smesh.config.schema import LocalModel

__all__ = ["NerBackend", "load_ner"]


class NerBackend(Protocol):
    """A model that finds person names; loaded only from a local path."""

    def persons(self, text: str) -> Sequence[tuple[int, int]]: ...


def load_ner(model: LocalModel) -> NerBackend:
    """The backend for ``ner:``; ValueError (a config error) when a package or file is missing."""
    path = Path(model.path)
    if not path.exists():
        raise ValueError(f"ner: {model.path}: no such file or directory")
    if model.kind == "spacy":
        return _SpacyNer(path)
    return _OnnxNer(path)


def _optional(module: str, kind: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(
            f"ner kind {kind} needs the {module} package, which is not installed"
        ) from exc


def _valid_unicode(text: str) -> str:
    """Lone surrogates become "?" (same length), since model libraries reject them."""
    return text.encode("utf-8", "replace").decode("utf-8")


class _SpacyNer:
    """A spaCy pipeline directory (``nlp.to_disk``); PERSON/PER entities become findings."""

    def __init__(self, path: Path) -> None:
        spacy = _optional("spacy", "spacy")
        try:
            self._nlp = spacy.load(path)
        except Exception as exc:  # spaCy raises OSError, ValueError, KeyError, ... by cause
            raise ValueError(f"ner: cannot load the spaCy pipeline at {path}: {exc}") from exc

    def persons(self, text: str) -> Sequence[tuple[int, int]]:
        doc = self._nlp(_valid_unicode(text))
        return [(e.start_char, e.end_char) for e in doc.ents if e.label_ in ("PERSON", "PER")]


class _OnnxNer:
    """A token-classification model exported to ONNX, in a folder with ``model.onnx``,
    ``tokenizer.json`` (Hugging Face tokenizers) and ``config.json`` (``id2label``)."""

    _PIECE = 1000  # characters per model call: stays under a 512-token context

    def __init__(self, path: Path) -> None:
        ort = _optional("onnxruntime", "onnx")
        self._np = _optional("numpy", "onnx")
        from tokenizers import Tokenizer  # noqa: PLC0415 - only this backend needs it

        folder = path if path.is_dir() else path.parent
        model = folder / "model.onnx" if path.is_dir() else path
        try:
            labels: dict[str, str] = json.loads((folder / "config.json").read_text())["id2label"]
            self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        except Exception as exc:  # missing files, bad JSON, a model onnxruntime rejects
            raise ValueError(f"ner: cannot load the ONNX model at {path}: {exc}") from exc
        tags = {int(k): v.upper() for k, v in labels.items()}
        self._person = frozenset(
            k for k, v in tags.items() if v.split("-")[-1] in ("PER", "PERSON")
        )
        self._begin = frozenset(k for k, v in tags.items() if v.startswith("B-"))
        self._inputs = frozenset(i.name for i in self._session.get_inputs())

    def persons(self, text: str) -> Sequence[tuple[int, int]]:
        np = self._np
        text = _valid_unicode(text)
        spans: list[tuple[int, int]] = []
        start = 0
        while start < len(text):
            stop = len(text)
            if stop - start > self._PIECE:  # cut at whitespace so no name is split
                stop = max(text.rfind(" ", start, start + self._PIECE), start + self._PIECE // 2)
            enc = self._tokenizer.encode(text[start:stop])
            feed = {"input_ids": np.asarray([enc.ids], dtype=np.int64)}
            if "attention_mask" in self._inputs:
                feed["attention_mask"] = np.asarray([enc.attention_mask], dtype=np.int64)
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.asarray([enc.type_ids], dtype=np.int64)
            tags = self._session.run(None, feed)[0][0].argmax(-1)
            current: tuple[int, int] | None = None
            for tag, (s, e), special in zip(
                tags, enc.offsets, enc.special_tokens_mask, strict=True
            ):
                if special or s == e:
                    continue
                if int(tag) not in self._person:
                    current = None
                elif current is not None and int(tag) not in self._begin:
                    current = spans[-1] = (current[0], start + e)
                else:
                    current = (start + s, start + e)
                    spans.append(current)
            start = stop
        return spans
