"""One request's trip through extproc, phase by phase, without gRPC.

Envoy calls four phases per request (DESIGN.md decision 4): request headers (who is
calling, which endpoint), request body (which model, may they, reserve budget, rewrite),
response headers (status, overhead header, stream or not), response body (usage, settle,
for SSE chunk by chunk). Each method returns a decision — :class:`Continue` or
:class:`Reply` — that the servicer turns into protobuf. Nothing here logs prompt or
answer text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from smesh.config.schema import Model, Tenant
from smesh.contract import ERROR_HEADER, MODEL_HEADER, RESIDENCY_HEADER, TENANT_HEADER
from smesh.extproc.budget import BudgetStore, BudgetUnavailable, Reservation
from smesh.extproc.endpoints import ENDPOINTS, EndpointSpec, ParsedRequest, parse_request
from smesh.extproc.errors import GatewayError
from smesh.extproc.metering import StreamMeter, Usage, prepare_stream_request, usage_from_json
from smesh.extproc.policy import Policy
from smesh.extproc.telemetry import RequestRecord, Telemetry
from smesh.extproc.tokens import estimate_prompt_tokens, load_counter

__all__ = ["MAX_METERED_ANSWER", "Continue", "Decision", "Processor", "Reply"]

# A JSON answer larger than this still reaches the client; its usage is then unknown and
# the reservation is kept as the charge (see _settle).
MAX_METERED_ANSWER = 64 << 20

log = logging.getLogger(__name__)

OVERHEAD_HEADER = "x-smesh-overhead-ms"
# Client-supplied copies of the headers the route table trusts are always replaced/removed.
_TRUSTED = (MODEL_HEADER, TENANT_HEADER, RESIDENCY_HEADER)


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


@dataclass
class Processor:
    """State for one HTTP request. Not shared between requests or threads."""

    policy: Policy
    budgets: BudgetStore
    telemetry: Telemetry
    clock: Callable[[], float] = time.monotonic
    overhead_s: float = 0.0
    # filled as the phases go
    tenant: Tenant | None = None
    spec: EndpointSpec | None = None
    model: Model | None = None
    request: ParsedRequest | None = None
    reservation: Reservation | None = None
    prompt_estimate: int = 0
    status: int = 0
    meter: StreamMeter | None = None
    usage: Usage | None = None
    started: float = 0.0
    first_byte: float | None = None
    settled: bool = False
    traceparent: str = ""
    _answer: list[bytes] = field(default_factory=list)
    _answer_size: int = 0

    # -- request headers -----------------------------------------------------------------

    def request_headers(
        self,
        headers: Mapping[str, str],
        jwt_claims: Mapping[str, Any] | None,
        end_of_stream: bool = False,
    ) -> Decision:
        self.started = self.clock()
        self.traceparent = self.traceparent or headers.get("traceparent", "")
        path = headers.get(":path", "").split("?", 1)[0]
        method = headers.get(":method", "")
        try:
            self.tenant = self._authenticate(headers, jwt_claims)
            if path == "/v1/models" or path.startswith("/v1/models/"):
                return self._models(method, path)
            spec = ENDPOINTS.get(path)
            if spec is None:
                raise GatewayError(404, "unknown_endpoint", f"no such endpoint: {path[:200]}")
            if method != "POST":
                raise GatewayError(405, "method_not_allowed", f"{path} takes POST")
            if end_of_stream:
                raise GatewayError(400, "empty_body", "the request body is empty; send JSON")
            self.spec = spec
        except GatewayError as err:
            return self._refuse(err)
        return Continue()

    def _authenticate(
        self, headers: Mapping[str, str], jwt_claims: Mapping[str, Any] | None
    ) -> Tenant:
        jwt = self.policy.config.jwt
        if jwt is not None and jwt_claims is not None:
            name = jwt_claims.get(jwt.tenant_claim)
            tenant = self.policy.tenants_by_name.get(name) if isinstance(name, str) else None
            if tenant is None:
                raise GatewayError(401, "unknown_tenant", "the token names no known tenant")
            return tenant
        auth = headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get("api-key", "")
        if not key:
            raise GatewayError(401, "missing_api_key", "send an API key: Authorization: Bearer KEY")
        tenant = self.policy.tenant_for_key(key)
        if tenant is None:
            raise GatewayError(401, "invalid_api_key", "the API key is not valid")
        return tenant

    def _models(self, method: str, path: str) -> Reply:
        if method != "GET":
            raise GatewayError(405, "method_not_allowed", "/v1/models takes GET")
        assert self.tenant is not None
        names = self.policy.catalog.get(self.tenant.name, ())
        entries = [{"id": n, "object": "model", "created": 0, "owned_by": "smesh"} for n in names]
        if path != "/v1/models":
            wanted = path.removeprefix("/v1/models/")
            entry = next((e for e in entries if e["id"] == wanted), None)
            if entry is None:
                raise GatewayError(404, "model_not_found", f"model {wanted[:200]!r} not found")
            return self._reply(200, orjson.dumps(entry))
        return self._reply(200, orjson.dumps({"object": "list", "data": entries}))

    def _reply(self, status: int, body: bytes) -> Reply:
        self.status = status
        return Reply(status, body, {"content-type": "application/json"})

    # -- request body ----------------------------------------------------------------------

    def request_body(self, raw: bytes) -> Decision:
        assert self.spec is not None and self.tenant is not None
        try:
            request = parse_request(self.spec, raw)
            model = self.policy.models.get(request.model)
            if model is None:
                raise GatewayError(
                    404, "model_not_found", f"model {request.model[:200]!r} not found"
                )
            if not self.policy.may_use(self.tenant, model):
                in_region = self.policy.in_regions(self.tenant, model)
                code = "model_not_allowed" if in_region else "region_not_allowed"
                raise GatewayError(403, code, f"tenant may not use model {model.name!r} ({code})")
            self.model, self.request = model, request
            self._reserve(model, request)
        except GatewayError as err:
            return self._refuse(err)
        decision = Continue(
            set_headers={MODEL_HEADER: model.name, TENANT_HEADER: self.tenant.name},
            remove_headers=["authorization", "api-key"],
            clear_route_cache=True,
        )
        residency = self.policy.residency(self.tenant)
        if residency is not None:
            decision.set_headers[RESIDENCY_HEADER] = residency
        else:
            decision.remove_headers.append(RESIDENCY_HEADER)
        body = request.body
        changed = False
        if request.model != model.name:
            body = {**body, "model": model.name}  # aliases reach the server as its own name
            changed = True
        if self.spec.completes and request.max_tokens is None:
            # The reservation assumed the model's cap: make the server honour it too.
            body = {**body, "max_tokens": model.max_tokens}
            changed = True
        if request.stream:
            body, wants_usage = prepare_stream_request(body)
            changed = True
            self.meter = StreamMeter(
                client_wants_usage=wants_usage, counter=load_counter(model.tokenizer)
            )
        if changed:
            decision.body = orjson.dumps(body)
            decision.set_headers["content-length"] = str(len(decision.body))
        return decision

    def _reserve(self, model: Model, request: ParsedRequest) -> None:
        assert self.tenant is not None and self.spec is not None
        limits = self.tenant.budgets
        if not (limits.requests_per_minute or limits.tokens_per_minute or limits.tokens_per_day):
            return
        tokens = 0
        if limits.tokens_per_minute or limits.tokens_per_day:
            # Tokenizing costs ~0.2 ms per KB of prompt (measured): only when tokens count.
            cap = (request.max_tokens or model.max_tokens) if self.spec.completes else 0
            tokens = self._estimate() + cap
        try:
            admission = self.budgets.reserve(self.tenant.name, limits, tokens)
        except BudgetUnavailable as exc:
            log.error("budget store unavailable, refusing (fail closed): %s", exc)
            raise GatewayError(
                503, "budget_store_unavailable", "the budget store is unreachable; try again"
            ) from None
        if not admission.admitted:
            raise GatewayError(
                429,
                "budget_exceeded",
                f"tenant {self.tenant.name!r} is over its {admission.limit} budget",
                retry_after=max(1, int(admission.retry_after + 0.999)),
            )
        self.reservation = admission.reservation

    # -- response ------------------------------------------------------------------------

    def response_headers(self, headers: Mapping[str, str]) -> Decision:
        status = headers.get(":status", "0")
        self.status = int(status) if status.isdigit() else 0
        if self.status >= 300 and self.meter is not None:
            self.meter = None  # an error answer is JSON, not a stream
        overhead_ms = (self.overhead_s + 0.0) * 1000
        return Continue(set_headers={OVERHEAD_HEADER: f"{overhead_ms:.2f}"})

    def response_body(self, chunk: bytes, end_of_stream: bool) -> Decision:
        if self.first_byte is None:
            self.first_byte = self.clock()
        if self.meter is None:
            # JSON answers stream through untouched; keep their bytes for the usage field.
            if self.status < 300 and self._answer_size + len(chunk) <= MAX_METERED_ANSWER:
                self._answer.append(chunk)
                self._answer_size += len(chunk)
            if end_of_stream:
                complete = self._answer_size <= MAX_METERED_ANSWER and self.status < 300
                self.usage = usage_from_json(b"".join(self._answer)) if complete else None
                self._answer.clear()
                self._settle()
            return Continue()
        out = self.meter.feed(chunk, end_of_stream)
        if not self.meter.is_cut and self._over_budget():
            out += self.meter.cut("the tenant's token budget is exhausted")
        if end_of_stream:
            self.usage = self.meter.usage
            self._settle()
        return Continue(body=out)

    def _estimate(self) -> int:
        """The prompt's token count with the model's own tokenizer (computed once)."""
        if self.prompt_estimate == 0 and self.model and self.request and self.spec:
            counter = load_counter(self.model.tokenizer)
            self.prompt_estimate = estimate_prompt_tokens(
                self.spec.path, self.request.body, counter
            )
        return self.prompt_estimate

    def _over_budget(self) -> bool:
        """A stream past its reservation asks for more; refused means it is cut."""
        if self.reservation is None or self.meter is None or self.tenant is None:
            return False
        used = self._estimate() + self.meter.completion_tokens_seen
        if used <= self.reservation.tokens:
            return False
        extra = max(used - self.reservation.tokens, 64)  # ask in steps, not per token
        try:
            extended = self.budgets.extend(self.reservation, self.tenant.budgets, extra)
        except BudgetUnavailable:
            return True  # fail closed
        if extended is None:
            return True
        self.reservation = extended
        return False

    # -- end -------------------------------------------------------------------------------

    def _refuse(self, err: GatewayError) -> Reply:
        self.status = err.status
        self.telemetry.refused(self.tenant.name if self.tenant else "", err.status, err.code)
        return Reply.error(err)

    def _settle(self) -> None:
        if self.settled:
            return
        self.settled = True
        if self.usage is None and self.meter is not None and self.status < 300:
            seen = self.meter.completion_tokens_seen
            self.usage = Usage(prompt_tokens=self._estimate(), completion_tokens=seen)
        if self.reservation is not None:
            if self.usage is not None:
                actual = self.usage.total
            elif 200 <= self.status < 300:
                actual = self.reservation.tokens  # answered, usage unknown: charge the hold
            else:
                actual = 0  # refused upstream or abandoned before an answer: give it back
            try:
                self.budgets.settle(self.reservation, actual)
            except BudgetUnavailable as exc:
                log.error("could not settle a reservation (it expires with its window): %s", exc)
        if self.tenant is None or self.model is None:
            return
        now = self.clock()
        self.telemetry.record(
            RequestRecord(
                tenant=self.tenant.name,
                model=self.model.name,
                endpoint=self.spec.path if self.spec else "",
                status=self.status,
                usage=self.usage,
                cost=self.model.price.cost(self.usage.prompt_tokens, self.usage.completion_tokens)
                if self.usage
                else 0.0,
                duration_s=now - self.started,
                ttft_s=(self.first_byte - self.started) if self.first_byte else None,
                overhead_s=self.overhead_s,
                streamed=self.meter is not None,
                traceparent=self.traceparent,
            )
        )

    def finish(self) -> None:
        """The stream ended (normally, or the client/Envoy went away): settle once."""
        self._settle()
