"""One request's trip through extproc, phase by phase, without gRPC.

Envoy sends two messages per request (DESIGN.md decision 4): the request headers (who is
calling, which endpoint) and the buffered request body (which model, may they, guards,
reserve budget, rewrite). The answer does not pass through Python: Envoy captures its
usage and its access log brings it back (:mod:`~smesh.extproc.completion` settles and
records it). Only a request whose tenant's policy scans answers, or cuts streams that
outrun their reservation, asks for the response phases too (``answer_mode``); then
:mod:`~smesh.extproc.answers` rewrites the answer chunk by chunk.

The work is done by small steps, each a function with typed inputs and a decision or a
:class:`GatewayError` out: :func:`~smesh.extproc.auth.authenticate`,
:func:`~smesh.extproc.routing.resolve_model`, :func:`~smesh.extproc.guarding.guard_prompt`,
:func:`~smesh.extproc.admission.reservation_tokens` / :func:`~smesh.extproc.admission.reserve`,
:func:`~smesh.extproc.endpoints.serialise_body`. :class:`Processor` only runs them in
order; what it carries is split in two: :class:`Deps` (shared by every request: stores,
telemetry, audit, clock) and :class:`RequestState` (this request's own state, nothing
else). Each phase returns a :class:`Continue` or :class:`Reply` that the servicer turns
into protobuf. Nothing here logs prompt or answer text.
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
    REQUEST_NAMESPACE,
    RESIDENCY_HEADER,
    TENANT_HEADER,
)
from smesh.extproc.admission import admit, completion_cap, has_budgets
from smesh.extproc.answers import AnswerRewriter
from smesh.extproc.audit import AuditLog, AuditTicket
from smesh.extproc.auth import authenticate
from smesh.extproc.budget import (
    BudgetStore,
    BudgetUnavailable,
    Hold,
    Reservation,
    reservation_text,
)
from smesh.extproc.endpoints import (
    ENDPOINTS,
    EndpointSpec,
    ParsedRequest,
    check_content_type,
    parse_request,
    serialise_body,
)
from smesh.extproc.errors import GatewayError
from smesh.extproc.guarding import PromptVerdict, guard_prompt
from smesh.extproc.metering import prepare_stream_request
from smesh.extproc.policy import Policy
from smesh.extproc.routing import model_list, resolve_model
from smesh.extproc.stream_budget import StreamBudget
from smesh.extproc.telemetry import Telemetry, trace_id_of

__all__ = [
    "HOLD_SLACK_S",
    "Continue",
    "Decision",
    "Deps",
    "Processor",
    "Reply",
    "RequestState",
]

# Headers the upstream must never see from a client; Envoy removes them too (route level),
# so that no failure mode lets them through.
CREDENTIAL_HEADERS = ("authorization", "api-key")
# Envoy holds at most 100 headers per request (its default) and checks the count again
# after extproc's mutation: a request already near the limit would fail there with an
# opaque 500. extproc adds at most this many (model, tenant, residency) — a request with
# less room gets a clear 431 instead.
MAX_REQUEST_HEADERS = 100
HEADERS_ADDED = 3
# A reservation is refunded if its access-log entry has not arrived this long after the
# model's own timeout (which bounds the whole request, streams included).
HOLD_SLACK_S = 60.0


@dataclass
class Continue:
    """Let the request/response go on, possibly changed."""

    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    body: bytes | None = None
    clear_route_cache: bool = False
    metadata: dict[str, Any] | None = None  # dynamic metadata: namespace -> fields
    answer_mode: bool = False  # switch the response phases on for this request


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
    """What every request shares: the budget store, telemetry, the audit log, the clock."""

    budgets: BudgetStore
    telemetry: Telemetry
    audit: AuditLog | None = None
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time


@dataclass
class RequestState:
    """One request's state, filled as the phases go. Not shared between requests."""

    policy: Policy
    started: float = 0.0
    started_at: float = 0.0  # wall clock, for records
    request_id: str = ""
    traceparent: str = ""
    tenant: Tenant | None = None
    spec: EndpointSpec | None = None
    model: Model | None = None
    request: ParsedRequest | None = None
    verdict: PromptVerdict | None = None
    reservation: Reservation | None = None
    prompt_tokens: int = 0
    ticket: AuditTicket | None = None
    answer: AnswerRewriter | None = None
    stream_budget: StreamBudget | None = None
    overhead_s: float = 0.0  # extproc's own time in the phases done so far (the servicer adds)
    body_started: float = 0.0
    forwarded: bool = False


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
        state.started_at = self.deps.wall_clock()
        state.request_id = headers.get("x-request-id", "")
        state.traceparent = state.traceparent or headers.get("traceparent", "")
        path = headers.get(":path", "").split("?", 1)[0]
        method = headers.get(":method", "")
        try:
            if len(headers) + HEADERS_ADDED > MAX_REQUEST_HEADERS:
                raise GatewayError(
                    431,
                    "too_many_headers",
                    f"the request has too many headers; send fewer than {MAX_REQUEST_HEADERS - 10}",
                )
            if self.deps.audit is not None:
                state.ticket = self.deps.audit.reserve()
                if state.ticket is None:  # refused rather than served unaudited
                    raise GatewayError(
                        503, "audit_unavailable", "the audit log is backed up; try again"
                    )
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
        # Only a tenant whose answers extproc must see pays for the response phases.
        return Continue(answer_mode=state.policy.answer_mode(state.tenant))

    def _reply(self, status: int, body: bytes) -> Reply:
        self._audit_local(status, "answered", "")
        return Reply(status, body, {"content-type": "application/json"})

    # -- request body ----------------------------------------------------------------------

    def request_body(self, raw: bytes) -> Decision:
        state = self.state
        state.body_started = self.deps.clock()
        assert state.spec is not None and state.tenant is not None
        spec, tenant, policy = state.spec, state.tenant, state.policy
        try:
            request = parse_request(spec, raw)
            model = resolve_model(policy, tenant, request.model)
            state.model, state.request = model, request
            completion_cap(spec, model, request)  # over the model's max_tokens: 400
            guard = policy.guard_of(tenant)
            if guard is not None:
                state.verdict = guard_prompt(guard, spec.path, request.body)
                request = ParsedRequest(
                    state.verdict.body, request.model, request.stream, request.max_tokens
                )
                state.request = request
            if has_budgets(tenant.budgets):
                state.reservation, state.prompt_tokens = admit(
                    self.deps.budgets,
                    tenant.name,
                    tenant.budgets,
                    spec,
                    model,
                    request,
                    len(raw),
                    policy.estimators[model.name],
                    Hold(state.request_id, model.timeout + HOLD_SLACK_S),
                )
            changed = state.verdict is not None and state.verdict.changed
            body = self._upstream_body(spec, model, request, changed)
        except GatewayError as err:
            return self._refuse(err)
        return self._forward(tenant, model, body)

    def _upstream_body(
        self, spec: EndpointSpec, model: Model, request: ParsedRequest, changed: bool
    ) -> bytes | None:
        """The new body to send upstream, or ``None``: the client's bytes go as they are."""
        body: Mapping[str, Any] = request.body
        if request.model != model.name:
            body = {**body, "model": model.name}  # aliases reach the server as its own name
            changed = True
        if spec.completes and request.max_tokens is None:
            # The reservation assumed the model's cap: make the server honour it too.
            body = {**body, "max_tokens": model.max_tokens}
            changed = True
        if request.stream:
            forced = prepare_stream_request(body)  # usage is read from the stream by Envoy
            if forced is not body:
                body, changed = forced, True
        # Serialised either way: a body nested past what the serialiser writes is a 400 even
        # when it would go upstream unchanged (model servers parse it too).
        encoded = serialise_body(body)
        return encoded if changed else None

    def _forward(self, tenant: Tenant, model: Model, body: bytes | None) -> Continue:
        state = self.state
        assert state.spec is not None and state.request is not None
        policy = state.policy
        guard = policy.guard_of(tenant)
        if guard is not None and guard.scans_answers and state.verdict is not None:
            state.answer = AnswerRewriter(guard, state.spec, state.verdict.redactor)
        limits = tenant.budgets
        if (
            limits.enforce_in_stream
            and state.request.stream
            and state.reservation is not None
            and (limits.tokens_per_minute or limits.tokens_per_day)
        ):
            state.stream_budget = StreamBudget(
                self.deps.budgets,
                limits,
                state.reservation,
                state.prompt_tokens,
                policy.counters[model.name],
            )
        state.forwarded = True
        # extproc's own time: the phases before this one, and this one so far — not the
        # time between them (Envoy buffering the body, the gRPC round trip).
        overhead_ms = (state.overhead_s + self.deps.clock() - state.body_started) * 1000
        decision = Continue(
            set_headers={MODEL_HEADER: model.name, TENANT_HEADER: tenant.name},
            remove_headers=list(CREDENTIAL_HEADERS),
            body=body,
            clear_route_cache=True,
            metadata={REQUEST_NAMESPACE: self._record_fields(model, overhead_ms)},
        )
        if body is not None:
            decision.set_headers["content-length"] = str(len(body))
        residency = policy.residency.get(tenant.name)
        if residency is not None:
            decision.set_headers[RESIDENCY_HEADER] = residency
        else:  # Envoy drops client copies early; this holds even if that config is missing
            decision.remove_headers.append(RESIDENCY_HEADER)
        if state.ticket is not None:
            # The record is written when Envoy's access log brings the answer's outcome.
            state.ticket.cancel()
            state.ticket = None
        return decision

    def _record_fields(self, model: Model, overhead_ms: float) -> dict[str, Any]:
        """What the access-log entry must carry for settling, metrics and the audit record."""
        state = self.state
        assert state.tenant is not None and state.spec is not None and state.request is not None
        fields: dict[str, Any] = {
            "tenant": state.tenant.name,
            "model": model.name,
            "endpoint": state.spec.path,
            "stream": state.request.stream,
            "started_at": state.started_at,
            "overhead_ms": round(overhead_ms, 2),  # Envoy writes x-smesh-overhead-ms from it
        }
        if trace_id_of(state.traceparent) is not None:  # a client's malformed one is dropped
            fields["traceparent"] = state.traceparent
        if state.reservation is not None:
            fields["reservation"] = reservation_text(state.reservation)
        verdict = state.verdict
        if verdict is not None:
            if verdict.fired:
                fields["guards"] = list(verdict.fired)
            if verdict.entities:
                fields["entities"] = dict(verdict.entities)
            if verdict.flags:  # Envoy writes this on the answer as x-smesh-guard
                fields["flags"] = ",".join(verdict.flags)
        return fields

    # -- response (only with answer_mode) ---------------------------------------------------

    def response_headers(self, headers: Mapping[str, str]) -> Decision:
        state = self.state
        status = headers.get(":status", "0")
        code = int(status) if status.isascii() and status.isdigit() else 0
        if not 200 <= code < 300 or "text/event-stream" not in headers.get("content-type", ""):
            state.stream_budget = None  # only a stream can outrun its reservation
        if state.answer is not None and not state.answer.begin(code, headers):
            state.answer = None
        if state.answer is None and state.stream_budget is None:
            return Continue()
        # The rewrite changes the answer's length: let Envoy frame it.
        return Continue(remove_headers=["content-length"])

    def response_body(self, chunk: bytes, end_of_stream: bool) -> Decision:
        state = self.state
        if state.answer is None and state.stream_budget is None:
            return Continue()
        out = chunk
        # The guard first, then the budget: once a stream is cut, text the guard still
        # held back is never released after the closing events.
        if state.answer is not None:
            out = state.answer.feed(out, end_of_stream)
        if state.stream_budget is not None:
            out = state.stream_budget.feed(out, end_of_stream)
        return Continue(body=out)

    # -- end -------------------------------------------------------------------------------

    def _refuse(self, err: GatewayError) -> Reply:
        state = self.state
        tenant = state.tenant.name if state.tenant else ""
        self.deps.telemetry.refused(tenant, err.status, err.recorded_reason)
        self._audit_local(err.status, "refused", err.recorded_reason)
        return Reply.error(err)

    def _audit_local(self, status: int, decision: str, reason: str) -> None:
        """The audit record of a request extproc answered itself (no access-log entry)."""
        ticket, self.state.ticket = self.state.ticket, None
        if ticket is None:
            return
        state = self.state
        record: dict[str, Any] = {
            "time": state.started_at,
            "request_id": state.request_id,
            "tenant": state.tenant.name if state.tenant else None,
            "model": state.model.name if state.model else None,
            "decision": decision,
            "status": status,
            "latency_ms": round((self.deps.clock() - state.started) * 1000, 3),
        }
        if reason:
            record["reason"] = reason
        if state.verdict is not None:
            record["guards"] = list(state.verdict.fired)
            record["entities"] = dict(state.verdict.entities)
        ticket.write(record)

    def finish(self) -> None:
        """The stream ended (normally, or the client/Envoy went away)."""
        state = self.state
        if state.ticket is not None:
            # Neither refused nor forwarded (Envoy gave up mid-request): say so.
            self._audit_local(499, "abandoned", "stream_ended")
        if state.reservation is not None and not state.forwarded:
            try:
                self.deps.budgets.settle(state.reservation, 0)  # never went upstream
            except BudgetUnavailable as exc:
                self.deps.telemetry.settle_failed(exc)
