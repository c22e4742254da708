"""One request's trip through extproc, phase by phase, without gRPC.

Envoy calls up to four phases per request (DESIGN.md decision 4): request headers (who
is calling, which endpoint), request body (which model, may they, reserve budget,
rewrite), response headers and response body (usage, settle; SSE chunk by chunk).

The work is done by small steps, each a function with typed inputs and a decision or a
:class:`GatewayError` out: :func:`~smesh.extproc.auth.authenticate`,
:func:`~smesh.extproc.routing.resolve_model`,
:func:`~smesh.extproc.admission.reservation_tokens` / :func:`~smesh.extproc.admission.reserve`,
:func:`~smesh.extproc.endpoints.serialise_body`. :class:`Processor` only runs them in
order; what it carries is split in two: :class:`Deps` (shared by every request: stores,
telemetry, clock) and :class:`RequestState` (this request's own state, nothing else).
Each phase returns a :class:`Continue` or :class:`Reply` that the servicer turns into
protobuf. Nothing here logs prompt or answer text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from smesh.config.schema import Model, Tenant
from smesh.contract import (
    ERROR_HEADER,
    MODEL_HEADER,
    OVERHEAD_HEADER,
    RESIDENCY_HEADER,
    TENANT_HEADER,
)
from smesh.extproc.admission import completion_cap, has_budgets, reservation_tokens, reserve
from smesh.extproc.auth import authenticate
from smesh.extproc.budget import BudgetStore, BudgetUnavailable, Reservation
from smesh.extproc.endpoints import (
    ENDPOINTS,
    EndpointSpec,
    ParsedRequest,
    check_content_type,
    parse_request,
    serialise_body,
)
from smesh.extproc.errors import GatewayError
from smesh.extproc.metering import StreamMeter, Usage, prepare_stream_request, usage_from_json
from smesh.extproc.policy import Policy
from smesh.extproc.routing import model_list, resolve_model
from smesh.extproc.telemetry import RequestRecord, Telemetry
from smesh.extproc.tokens import estimate_prompt_tokens

__all__ = [
    "MAX_METERED_ANSWER",
    "Continue",
    "Decision",
    "Deps",
    "Processor",
    "Reply",
    "RequestState",
]

# A JSON answer larger than this still reaches the client; its usage is then unknown and
# the reservation is kept as the charge (see _settle).
MAX_METERED_ANSWER = 64 << 20
# Headers the upstream must never see from a client; Envoy removes them too (route level),
# so that no failure mode lets them through.
CREDENTIAL_HEADERS = ("authorization", "api-key")


@dataclass
class Continue:
    """Let the request/response go on, possibly changed."""

    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    body: bytes | None = None
    clear_route_cache: bool = False


@dataclass
class Reply:
    """Answer the client now; nothing goes upstream."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(cls, err: GatewayError) -> Reply:
        headers = {"content-type": "application/json", ERROR_HEADER: "1"}
        if err.retry_after is not None:
            headers["retry-after"] = str(err.retry_after)
        return cls(err.status, err.body(), headers)


Decision = Continue | Reply


@dataclass(frozen=True)
class Deps:
    """What every request shares: the budget store, telemetry, the clock."""

    budgets: BudgetStore
    telemetry: Telemetry
    clock: Callable[[], float] = time.monotonic


@dataclass
class RequestState:
    """One request's state, filled as the phases go. Not shared between requests."""

    policy: Policy
    started: float = 0.0
    traceparent: str = ""
    tenant: Tenant | None = None
    spec: EndpointSpec | None = None
    model: Model | None = None
    request: ParsedRequest | None = None
    reservation: Reservation | None = None
    prompt_estimate: int | None = None
    status: int = 0
    meter: StreamMeter | None = None
    usage: Usage | None = None
    first_byte: float | None = None
    overhead_s: float = 0.0
    settled: bool = False
    answer: list[bytes] = field(default_factory=list)
    answer_size: int = 0


class Processor:
    """Runs one request's steps in order; holds its dependencies and its state apart."""

    __slots__ = ("deps", "state")

    def __init__(self, deps: Deps, policy: Policy) -> None:
        self.deps = deps
        self.state = RequestState(policy)

    # -- request headers -----------------------------------------------------------------

    def request_headers(
        self,
        headers: Mapping[str, str],
        jwt_claims: Mapping[str, Any] | None,
        end_of_stream: bool = False,
    ) -> Decision:
        state = self.state
        state.started = self.deps.clock()
        state.traceparent = state.traceparent or headers.get("traceparent", "")
        path = headers.get(":path", "").split("?", 1)[0]
        method = headers.get(":method", "")
        try:
            state.tenant = authenticate(state.policy, headers, jwt_claims)
            if path.rstrip("/") == "/v1/models" or path.startswith("/v1/models/"):
                return self._reply(200, model_list(state.policy, state.tenant, method, path))
            spec = ENDPOINTS.get(path)
            if spec is None:
                raise GatewayError(404, "unknown_endpoint", f"no such endpoint: {path[:200]}")
            if method != "POST":
                raise GatewayError(405, "method_not_allowed", f"{path} takes POST")
            check_content_type(headers.get("content-type"))
            if end_of_stream:
                raise GatewayError(400, "empty_body", "the request body is empty; send JSON")
            state.spec = spec
        except GatewayError as err:
            return self._refuse(err)
        return Continue()

    def _reply(self, status: int, body: bytes) -> Reply:
        self.state.status = status
        return Reply(status, body, {"content-type": "application/json"})

    # -- request body ----------------------------------------------------------------------

    def request_body(self, raw: bytes) -> Decision:
        state = self.state
        assert state.spec is not None and state.tenant is not None
        spec, tenant, policy = state.spec, state.tenant, state.policy
        try:
            request = parse_request(spec, raw)
            model = resolve_model(policy, tenant, request.model)
            state.model, state.request = model, request
            completion_cap(spec, model, request)  # over the model's max_tokens: 400
            if has_budgets(tenant.budgets):
                tokens = reservation_tokens(
                    spec, model, request, policy.counters[model.name], tenant.budgets
                )
                state.reservation = reserve(self.deps.budgets, tenant.name, tenant.budgets, tokens)
            body = self._upstream_body(spec, model, request)
        except GatewayError as err:
            return self._refuse(err)
        decision = Continue(
            set_headers={
                MODEL_HEADER: model.name,
                TENANT_HEADER: tenant.name,
                "content-length": str(len(body)),
            },
            remove_headers=list(CREDENTIAL_HEADERS),
            body=body,
            clear_route_cache=True,
        )
        residency = policy.residency.get(tenant.name)
        if residency is not None:
            decision.set_headers[RESIDENCY_HEADER] = residency
        else:  # Envoy drops client copies early; this holds even if that config is missing
            decision.remove_headers.append(RESIDENCY_HEADER)
        return decision

    def _upstream_body(self, spec: EndpointSpec, model: Model, request: ParsedRequest) -> bytes:
        """The body that goes upstream: always re-serialised (see :mod:`.endpoints`)."""
        body = request.body
        if request.model != model.name:
            body = {**body, "model": model.name}  # aliases reach the server as its own name
        if spec.completes and request.max_tokens is None:
            # The reservation assumed the model's cap: make the server honour it too.
            body = {**body, "max_tokens": model.max_tokens}
        if request.stream:
            body, wants_usage = prepare_stream_request(body)
            # Deltas are tokenised only when a token budget could cut the stream.
            limits = self.state.tenant.budgets if self.state.tenant else None
            counts = limits is not None and bool(limits.tokens_per_minute or limits.tokens_per_day)
            self.state.meter = StreamMeter(
                client_wants_usage=wants_usage,
                counter=self.state.policy.counters[model.name] if counts else None,
            )
        return serialise_body(body)

    # -- response ------------------------------------------------------------------------

    def response_headers(self, headers: Mapping[str, str]) -> Decision:
        state = self.state
        status = headers.get(":status", "0")
        state.status = int(status) if status.isdigit() else 0
        if state.status >= 300 and state.meter is not None:
            state.meter = None  # an error answer is JSON, not a stream
        return Continue(set_headers={OVERHEAD_HEADER: f"{state.overhead_s * 1000:.2f}"})

    def response_body(self, chunk: bytes, end_of_stream: bool) -> Decision:
        state = self.state
        if state.first_byte is None:
            state.first_byte = self.deps.clock()
        if state.meter is None:
            # JSON answers stream through untouched; keep their bytes for the usage field.
            if state.status < 300 and state.answer_size + len(chunk) <= MAX_METERED_ANSWER:
                state.answer.append(chunk)
            state.answer_size += len(chunk)
            if end_of_stream:
                complete = state.answer_size <= MAX_METERED_ANSWER and state.status < 300
                state.usage = usage_from_json(b"".join(state.answer)) if complete else None
                state.answer.clear()
                self._settle()
            return Continue()
        out = state.meter.feed(chunk, end_of_stream)
        if not state.meter.is_cut and (cut := self._over_budget()) is not None:
            out += cut
        if end_of_stream:
            state.usage = state.meter.usage
            self._settle()
        return Continue(body=out)

    def _estimate(self) -> int:
        """The prompt's token count with the model's own tokenizer (computed once)."""
        state = self.state
        if state.prompt_estimate is None:
            state.prompt_estimate = 0
            if state.model and state.request and state.spec:
                counter = state.policy.counters[state.model.name]
                state.prompt_estimate = estimate_prompt_tokens(
                    state.spec.path, state.request.body, counter
                )
        return state.prompt_estimate

    def _over_budget(self) -> bytes | None:
        """A stream past its reservation asks for more; the closing events when refused."""
        state = self.state
        if state.reservation is None or state.meter is None or state.tenant is None:
            return None
        limits = state.tenant.budgets
        if not (limits.tokens_per_minute or limits.tokens_per_day):
            return None  # only requests are counted: there is no token budget to outrun
        used = self._estimate() + state.meter.completion_tokens_seen
        if used <= state.reservation.tokens:
            return None
        extra = max(used - state.reservation.tokens, 64)  # ask in steps, not per token
        try:
            extended = self.deps.budgets.extend(state.reservation, limits, extra)
        except BudgetUnavailable:
            # Fail closed, and say why: the budget is not known to be spent.
            return state.meter.cut(
                "the budget store is unreachable; the answer was cut",
                "budget_store_unavailable",
                type_="service_unavailable",
            )
        if extended is None:
            return state.meter.cut("the tenant's token budget is exhausted")
        state.reservation = extended
        return None

    # -- end -------------------------------------------------------------------------------

    def _refuse(self, err: GatewayError) -> Reply:
        state = self.state
        state.status = err.status
        tenant = state.tenant.name if state.tenant else ""
        self.deps.telemetry.refused(tenant, err.status, err.recorded_reason)
        return Reply.error(err)

    def _settle(self) -> None:
        state = self.state
        if state.settled:
            return
        state.settled = True
        if state.usage is None and state.meter is not None and state.status < 300:
            seen = state.meter.completion_tokens_seen
            state.usage = Usage(prompt_tokens=self._estimate(), completion_tokens=seen)
        if state.reservation is not None:
            if state.usage is not None:
                actual = state.usage.total
            elif 200 <= state.status < 300:
                actual = state.reservation.tokens  # answered, usage unknown: charge the hold
            else:
                actual = 0  # refused upstream or abandoned before an answer: give it back
            if state.reservation.tokens or actual:
                try:
                    self.deps.budgets.settle(state.reservation, actual)
                except BudgetUnavailable as exc:
                    self.deps.telemetry.settle_failed(exc)
        if state.tenant is None or state.model is None:
            return
        now = self.deps.clock()
        self.deps.telemetry.record(
            RequestRecord(
                tenant=state.tenant.name,
                model=state.model.name,
                endpoint=state.spec.path if state.spec else "",
                status=state.status,
                usage=state.usage,
                cost=state.model.price.cost(
                    state.usage.prompt_tokens, state.usage.completion_tokens
                )
                if state.usage
                else 0.0,
                duration_s=now - state.started,
                ttft_s=(state.first_byte - state.started) if state.first_byte else None,
                overhead_s=state.overhead_s,
                streamed=state.meter is not None,
                traceparent=state.traceparent,
            )
        )

    def finish(self) -> None:
        """The stream ended (normally, or the client/Envoy went away): settle once."""
        self._settle()
