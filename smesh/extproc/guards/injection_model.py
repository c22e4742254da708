"""The optional model-based injection scorer (``injection.model: {kind: onnx, path}``)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = ["OnnxScorer"]


def _optional(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


class OnnxScorer:
    """A local ONNX text classifier: ``tokenizer.json`` beside the model, nothing fetched.

    The model takes ``input_ids`` (and ``attention_mask``/``token_type_ids`` when it
    declares them) and returns logits: two classes (softmax, class 1 = injection) or one
    (sigmoid). Long texts are cut into windows of ``MAX_TOKENS``; at most ``MAX_WINDOWS``
    are scored (the rules always see the whole text) and the highest probability wins.
    """

    MAX_TOKENS = 512
    MAX_WINDOWS = 16

    def __init__(self, path: str) -> None:
        ort, numpy = _optional("onnxruntime"), _optional("numpy")
        if ort is None or numpy is None:
            raise ValueError(
                f"injection.model {path}: kind onnx needs the onnxruntime package installed"
            )
        self._np: Any = numpy
        from tokenizers import Tokenizer  # noqa: PLC0415 - only model-backed guards need it

        model = Path(path)
        if model.is_dir():
            model = model / "model.onnx"
        if not model.is_file():
            raise ValueError(f"injection.model {path}: no model file at {model}")
        vocabulary = model.parent / "tokenizer.json"
        if not vocabulary.is_file():
            raise ValueError(f"injection.model {path}: no tokenizer.json beside {model.name}")
        self._tokenizer = Tokenizer.from_file(str(vocabulary))
        try:
            self._session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ValueError(f"injection.model {path}: not a loadable ONNX model: {exc}") from exc
        self._inputs = frozenset(i.name for i in self._session.get_inputs())

    def probability(self, text: str) -> float:
        np = self._np
        ids = list(self._tokenizer.encode(text).ids) or [0]
        size = self.MAX_TOKENS
        windows = [ids[i : i + size] for i in range(0, len(ids), size)][: self.MAX_WINDOWS]
        input_ids = np.zeros((len(windows), max(map(len, windows))), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for row, window in enumerate(windows):
            input_ids[row, : len(window)] = window
            mask[row, : len(window)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": mask * 0}
        outputs = self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})
        logits = np.asarray(outputs[0], dtype=np.float64).reshape(len(windows), -1)
        if logits.shape[1] >= 2:
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities = shifted[:, 1] / shifted.sum(axis=1)
        else:
            probabilities = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return float(probabilities.max())
