"""How many tokens a request reserves, and whether its tenant's budgets admit it.

The rule (DESIGN decision 8, README "Budgets"):

- The completion cap is the request's ``max_tokens`` (or ``max_completion_tokens``), or
  the model's ``max_tokens`` when it sets none (and that cap is then sent upstream too).
  A request asking for more than the model's ``max_tokens`` is refused with 400
  ``max_tokens_too_large``: the model's limit is the most any request may reserve.
- The reservation is the prompt's tokens plus the cap, when a token budget applies (only
  requests are counted otherwise). A body over ``EXACT_BELOW_BYTES`` is first bounded
  from its size (:mod:`~smesh.extproc.estimate`: no tokenising on the hot path); the
  model's own tokenizer counts it when that bound would refuse the request, and always
  counts small bodies (cheap, and exact reservations refuse nothing early). The settle from
  the upstream's usage makes the charge exact either way.
- A reservation larger than a whole ``tokens_per_minute`` or ``tokens_per_day`` limit can
  never be admitted: 400 ``request_exceeds_budget`` (waiting would not help).
- Otherwise it must fit what is left of every window (``used + tokens <= limit``), or the
  request gets 429 ``budget_exceeded`` with ``Retry-After`` until that window ends. A
  reservation is never clamped: a client that asked for N tokens gets N or a refusal.
- The store is unreachable: 503 (fail closed), never an unmetered request.
"""

from __future__ import annotations

import logging

from smesh.config.schema import Budgets, Model
from smesh.extproc.budget import (
    BudgetStore,
    BudgetUnavailable,
    Hold,
    Reservation,
    exceeds_limits,
)
from smesh.extproc.endpoints import EndpointSpec, ParsedRequest
from smesh.extproc.errors import GatewayError
from smesh.extproc.estimate import PromptEstimator

__all__ = ["admit", "completion_cap", "has_budgets", "reserve"]

log = logging.getLogger(__name__)

# A body this small is counted exactly (about 50 µs with the builtin BPE, measured): the
# bound's overestimate would cost more in requests refused while budget remains.
EXACT_BELOW_BYTES = 512


def has_budgets(limits: Budgets) -> bool:
    return bool(limits.requests_per_minute or limits.tokens_per_minute or limits.tokens_per_day)


def completion_cap(spec: EndpointSpec, model: Model, request: ParsedRequest) -> int:
    """The completion tokens a request may produce (0 for embeddings)."""
    if not spec.completes:
        return 0
    if request.max_tokens is None:
        return model.max_tokens
    if request.max_tokens > model.max_tokens:
        raise GatewayError(
            400,
            "max_tokens_too_large",
            f"max_tokens is {request.max_tokens}; model {model.name!r} allows at most "
            f"{model.max_tokens} completion tokens",
        )
    return request.max_tokens


def _too_big(limits: Budgets, tokens: int) -> GatewayError | None:
    too_big = exceeds_limits(limits, tokens)
    if too_big is None:
        return None
    return GatewayError(
        400,
        "request_exceeds_budget",
        f"this request needs {tokens} tokens (prompt + max_tokens), more than the "
        f"tenant's whole {too_big} budget; lower max_tokens or the prompt",
    )


def admit(
    store: BudgetStore,
    tenant: str,
    limits: Budgets,
    spec: EndpointSpec,
    model: Model,
    request: ParsedRequest,
    body_bytes: int,
    estimator: PromptEstimator,
    hold: Hold | None = None,
) -> tuple[Reservation, int]:
    """Reserve for one request: (the reservation, the prompt tokens it assumed).

    Bound first; the exact count only when the bound would refuse (see the module rule).
    """
    cap = completion_cap(spec, model, request)
    if not (limits.tokens_per_minute or limits.tokens_per_day):
        return reserve(store, tenant, limits, 0, hold), 0
    prompt = estimator.bound(body_bytes)
    if body_bytes > EXACT_BELOW_BYTES and exceeds_limits(limits, prompt + cap) is None:
        try:
            return reserve(store, tenant, limits, prompt + cap, hold), prompt
        except GatewayError as err:
            if err.status != 429:
                raise
    prompt = estimator.exact(spec.path, request.body)
    if (error := _too_big(limits, prompt + cap)) is not None:
        raise error
    return reserve(store, tenant, limits, prompt + cap, hold), prompt


def reserve(
    store: BudgetStore, tenant: str, limits: Budgets, tokens: int, hold: Hold | None = None
) -> Reservation:
    """Admit ``tokens`` against every window or raise the refusal (429 / 503)."""
    try:
        admission = store.reserve(tenant, limits, tokens, hold=hold)
    except BudgetUnavailable as exc:
        log.error("budget store unavailable, refusing (fail closed): %s", exc)
        raise GatewayError(
            503, "budget_store_unavailable", "the budget store is unreachable; try again"
        ) from None
    if not admission.admitted or admission.reservation is None:
        raise GatewayError(
            429,
            "budget_exceeded",
            f"tenant {tenant!r} is over its {admission.limit} budget",
            retry_after=max(1, int(admission.retry_after + 0.999)),
        )
    return admission.reservation
