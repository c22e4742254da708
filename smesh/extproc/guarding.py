"""The guard step of the request pipeline: banned terms, prompt injection, PII in prompts.

A guard policy (``guards[]`` in the config) is compiled once per policy version into a
:class:`CompiledGuard` — detectors, automata and patterns built up front, so a request
only runs them. :func:`guard_prompt` is the step: the parsed body of one request in, a
:class:`PromptVerdict` out (the body to forward, what fired, entity counts, the request's
redactor for its answer), or a :class:`GatewayError` when the policy blocks.

Order: banned terms and injection are judged on the text as the client sent it, then PII
is redacted (the model sees the redacted text; the budget counts it). Refusals name the
policy and what fired — entity *types*, never values; never the banned term itself (the
list may be confidential). A detector that raises fails closed: the request is refused
with 503 ``guard_failed``, never forwarded unscanned.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smesh.config.schema import Guard, PiiAction
from smesh.extproc.errors import GatewayError
from smesh.extproc.guards.banned import BannedTermMatcher
from smesh.extproc.guards.injection import InjectionDetector, RuleSet
from smesh.extproc.guards.pii import PiiDetector
from smesh.extproc.guards.redact import Redactor
from smesh.extproc.guards.texts import map_request_texts, request_texts

__all__ = ["CompiledGuard", "PromptVerdict", "RuleSet", "compile_guard", "guard_prompt"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompiledGuard:
    """One guard policy, ready to run: immutable, shared by every request of its tenants."""

    name: str
    pii: PiiDetector | None = None
    prompts: PiiAction = "off"
    answers: PiiAction = "off"
    restore: bool = False
    hash_key: bytes | None = None
    injection: InjectionDetector | None = None
    injection_action: str = "off"
    banned: BannedTermMatcher | None = None
    banned_action: str = "block"

    @property
    def scans_answers(self) -> bool:
        """Whether extproc must see this tenant's answers (the response phases)."""
        return self.pii is not None and (self.answers != "off" or self.restore)


def compile_guard(guard: Guard, rules: RuleSet | None = None) -> CompiledGuard:
    """Build every detector of ``guard``; ``ValueError`` naming what could not be built.

    ``rules``: the injection rule set, compiled once per process and shared (building it
    takes about a second; a detector built on it takes nothing).
    """
    pii = guard.pii
    detector = None
    hash_key = None
    if pii is not None and (pii.prompts != "off" or pii.answers != "off"):
        detector = PiiDetector.from_config(pii)
        if pii.hash_key_file is not None:
            try:
                hash_key = Path(pii.hash_key_file).read_bytes().strip()
            except OSError as exc:
                raise ValueError(f"hash_key_file cannot be read: {exc}") from exc
            if len(hash_key) < 16:
                raise ValueError("hash_key_file holds fewer than 16 bytes: too weak a key")
    injection = guard.injection
    banned = guard.banned_terms
    return CompiledGuard(
        name=guard.name,
        pii=detector,
        prompts=pii.prompts if pii else "off",
        answers=pii.answers if pii else "off",
        restore=pii.restore if pii else False,
        hash_key=hash_key,
        injection=(
            InjectionDetector.from_config(injection, rules=rules)
            if injection is not None and injection.action != "off"
            else None
        ),
        injection_action=injection.action if injection else "off",
        banned=BannedTermMatcher.from_config(banned) if banned is not None else None,
        banned_action=banned.action if banned else "block",
    )


@dataclass
class PromptVerdict:
    """What the guard step decided for one request that it let through."""

    body: dict[str, Any]
    fired: list[str] = field(default_factory=list)  # guard names, for the audit record
    flags: list[str] = field(default_factory=list)  # x-smesh-guard values (flag actions)
    entities: Counter[str] = field(default_factory=Counter)  # PII type -> occurrences
    redactor: Redactor | None = None  # the request's placeholders, for its answer
    changed: bool = False  # the body differs from the client's (a redaction or a hash)


def _blocked(guard: CompiledGuard, code: str, message: str) -> GatewayError:
    return GatewayError(400, code, f"refused by guard policy {guard.name!r}: {message}")


def guard_prompt(guard: CompiledGuard, endpoint: str, body: Mapping[str, Any]) -> PromptVerdict:
    """Run ``guard`` on a request body; :class:`GatewayError` when it blocks or fails."""
    try:
        return _guard_prompt(guard, endpoint, body)
    except GatewayError:
        raise
    except Exception as exc:
        # Fail closed: a detector that cannot run must not let the text through unscanned.
        log.exception("guard policy %r failed; refusing the request", guard.name)
        raise GatewayError(
            503,
            "guard_failed",
            f"the request could not be checked by guard policy {guard.name!r}; it was not sent",
        ) from exc


def _guard_prompt(guard: CompiledGuard, endpoint: str, body: Mapping[str, Any]) -> PromptVerdict:
    verdict = PromptVerdict(body=dict(body))  # the client's body unless PII is rewritten
    texts: list[str] | None = None
    if guard.banned is not None or guard.injection is not None:
        texts = list(request_texts(endpoint, body))
    banned = guard.banned
    if banned is not None and texts is not None and any(banned.find(t) for t in texts):
        verdict.fired.append("banned_terms")
        if guard.banned_action == "block":
            raise _blocked(guard, "banned_term", "the request contains a banned term")
        verdict.flags.append("banned_term")
    if guard.injection is not None and texts is not None:
        scored = guard.injection.score(texts)
        if scored.score >= guard.injection.threshold:
            verdict.fired.append("injection")
            if guard.injection_action == "block":
                raise _blocked(
                    guard,
                    "prompt_injection_detected",
                    "the prompt looks like a prompt injection ("
                    + ", ".join(scored.signals[:5])
                    + ")",
                )
            verdict.flags.append("injection")
    if guard.pii is not None:
        redactor = Redactor(guard.pii, guard.prompts, guard.hash_key)
        if guard.prompts != "off":
            rewritten = map_request_texts(endpoint, body, redactor.apply)
            verdict.entities.update(redactor.counts)
            if verdict.entities and guard.prompts in ("redact", "hash"):
                verdict.body, verdict.changed = rewritten, True
            if verdict.entities:
                verdict.fired.append("pii")
            if redactor.blocked:
                types = ", ".join(sorted(verdict.entities))
                raise _blocked(guard, "pii_detected", f"the request contains PII ({types})")
        verdict.redactor = redactor
    return verdict
