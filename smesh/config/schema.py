"""The mesh config schema: what operators write in ``mesh.yaml``.

Pure data (pydantic v2); no gRPC, protobuf or Kubernetes imports. Field-level rules
live on the models; rules that span the document (a backend naming a cluster that
exists, unique names) live in :mod:`smesh.config.references`.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

__all__ = [
    "BUILTIN_ENTITIES",
    "Audit",
    "Backend",
    "BannedTerms",
    "BudgetStore",
    "Budgets",
    "CircuitBreakers",
    "Cluster",
    "CustomEntity",
    "Endpoint",
    "ExtProc",
    "GrpcService",
    "Guard",
    "HealthCheck",
    "InjectionGuard",
    "Jwt",
    "Listener",
    "LocalModel",
    "MeshConfig",
    "Model",
    "OutlierDetection",
    "PiiGuard",
    "Price",
    "Retries",
    "Simulate",
    "Tenant",
    "Tokenizer",
    "Tracing",
    "UpstreamTls",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """``"250ms"``, ``"30s"``, ``"2m"``, ``1.5`` (seconds) → seconds as a float."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 250ms, 30s or 2m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"must be a duration such as 250ms, 30s or 2m, not {value!r}")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
ModelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listener(_Strict):
    """Where Envoy accepts OpenAI-API traffic, and how it treats the clients that connect.

    Clients are external: Envoy appends the peer address to ``x-forwarded-for``, makes its
    own ``x-request-id`` and trusts no client hop unless ``trusted_hops`` says how many
    proxies in front of it to believe. The timeouts and the connection limit bound what
    slow or idle clients can hold.
    """

    name: Name
    port: Port
    address: str = "127.0.0.1"
    trusted_hops: int = Field(
        default=0, ge=0, le=16, description="proxies in front whose x-forwarded-for is believed"
    )
    request_headers_timeout: Duration = Field(
        default=10.0, gt=0, description="time a client has to send all request headers"
    )
    stream_idle_timeout: Duration = Field(
        default=120.0, gt=0, description="silence on a request or answer before it is reset"
    )
    idle_timeout: Duration = Field(
        default=60.0, gt=0, description="a connection with no request open is closed after this"
    )
    max_connections: int = Field(
        default=10_000, ge=1, description="open client connections; more are closed at once"
    )
    max_request_headers_kb: int = Field(
        default=60, ge=1, le=8192, description="larger request headers get 431"
    )


class Budgets(_Strict):
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)
    enforce_in_stream: bool = Field(
        default=False,
        description="count streamed tokens as they pass and cut a stream that outruns its "
        "reservation (its answers then pass through extproc)",
    )


class Tenant(_Strict):
    """A consumer of the gateway (enforced by extproc; declared here)."""

    name: Name
    api_keys: tuple[Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")], ...] = ()
    models: tuple[str, ...] = ("*",)
    regions: tuple[Name, ...] | None = None
    budgets: Budgets = Budgets()
    guard: Name | None = Field(default=None, description="the guards[] policy this tenant gets")


# What a guard does with what it finds. redact: typed, numbered placeholders; hash: a
# keyed, stable hash; block: refuse (400, entity types named, never values); log: leave the
# text, count; off: do not scan.
PiiAction = Literal["redact", "hash", "block", "log", "off"]


def _yaml_off(value: Any) -> Any:
    """YAML 1.1 reads a bare ``off`` as false: for an action, it means "off"."""
    return "off" if value is False else value


Action = Annotated[PiiAction, BeforeValidator(_yaml_off)]
BUILTIN_ENTITIES = (
    "EMAIL",
    "PHONE",
    "CREDIT_CARD",
    "IBAN",
    "US_SSN",
    "IP_ADDRESS",
    "SECRET",
    "PERSON",
)
EntityName = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,31}$")]


class CustomEntity(_Strict):
    """An operator-defined entity: a name and an RE2 pattern (linear time, no backtracking)."""

    name: EntityName
    pattern: str = Field(min_length=1, max_length=1000)


class LocalModel(_Strict):
    """An optional model-based backend, loaded only from a local path (nothing is fetched)."""

    kind: Literal["spacy", "onnx"]
    path: str = Field(min_length=1)


class PiiGuard(_Strict):
    prompts: Action = "redact"
    answers: Action = "off"
    entities: tuple[EntityName, ...] = BUILTIN_ENTITIES
    custom: tuple[CustomEntity, ...] = ()
    restore: bool = Field(
        default=False, description="placeholders in the answer map back for the same caller"
    )
    hash_key_file: str | None = Field(
        default=None, description="secret for action hash (a guessable hash would reveal values)"
    )
    ner: LocalModel | None = None


class InjectionGuard(_Strict):
    action: Annotated[Literal["block", "flag", "off"], BeforeValidator(_yaml_off)] = "block"
    threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    model: LocalModel | None = None


class BannedTerms(_Strict):
    terms: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...] = Field(min_length=1)
    action: Literal["block", "flag"] = "block"


class Guard(_Strict):
    """A named guard policy; tenants name one (a tenant without one is never scanned)."""

    name: Name
    pii: PiiGuard | None = None
    injection: InjectionGuard | None = None
    banned_terms: BannedTerms | None = None


class Audit(_Strict):
    """The tamper-evident request log: hash-chained JSONL, keyed, rotated by size."""

    path: str = ".smesh/audit.jsonl"
    rotate_bytes: int = Field(default=100 << 20, ge=4096)
    key_file: str | None = Field(
        default=None, description="HMAC key; without it a new key is made next to the log"
    )
    queue_size: int = Field(default=10_000, ge=1, description="records waiting to be written")


class Price(_Strict):
    """Catalog price of a model, in the operator's currency per million tokens."""

    prompt_per_1m: float = Field(default=0.0, ge=0)
    completion_per_1m: float = Field(default=0.0, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.prompt_per_1m + completion_tokens * self.completion_per_1m
        ) / 1e6


class Tokenizer(_Strict):
    """How extproc estimates prompt tokens before admission (a real tokenizer, local files).

    ``builtin``: the BPE that ships with the package; ``hf``: a ``tokenizer.json`` at
    ``path``; ``tiktoken``: a local ``.tiktoken`` BPE file at ``path`` (nothing is
    downloaded).
    """

    kind: Literal["builtin", "hf", "tiktoken"] = "builtin"
    path: str | None = None

    @model_validator(mode="after")
    def _needs_path(self) -> Tokenizer:
        if self.kind != "builtin" and not self.path:
            raise ValueError(f"a {self.kind} tokenizer needs a local path")
        return self


class Backend(_Strict):
    cluster: Name
    weight: int = Field(default=1, ge=0, le=10_000)


RetryOn = Literal[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "http3-post-connect-failure",
]


class Retries(_Strict):
    attempts: int = Field(default=1, ge=0, le=10, description="retries after the first try")
    per_try_timeout: Duration | None = None
    on: tuple[RetryOn, ...] = ("connect-failure", "reset", "5xx")


class Model(_Strict):
    """A model name clients ask for, and where its traffic goes."""

    name: ModelName
    aliases: tuple[ModelName, ...] = ()
    backends: tuple[Backend, ...] = Field(min_length=1)
    fallback: tuple[Name, ...] = ()
    timeout: Duration = 120.0
    retries: Retries = Retries()
    max_tokens: int = Field(
        default=1024, ge=1, description="completion cap reserved when a request sets none"
    )
    tokenizer: Tokenizer = Tokenizer()
    price: Price = Price()
    failure_mode_allow: bool = Field(
        default=False,
        description="extproc unreachable: pass requests for this model through unprocessed "
        "(no tenant check, no guard, no budget) instead of failing closed",
    )

    @field_validator("backends")
    @classmethod
    def _some_weight(cls, backends: tuple[Backend, ...]) -> tuple[Backend, ...]:
        if sum(b.weight for b in backends) <= 0:
            raise ValueError("at least one backend needs a weight above 0")
        return backends

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


class Endpoint(_Strict):
    address: str = Field(min_length=1)
    port: Port
    weight: int = Field(default=1, ge=1, le=128)


def _endpoint_from_string(value: Any) -> Any:
    """Accept ``"host:port"`` as shorthand for ``{address: host, port: port}``."""
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"must be host:port, not {value!r}")
        return {"address": host.strip("[]"), "port": int(port)}
    return value


class Simulate(_Strict):
    """Run the built-in model simulator for this cluster (``smesh up``)."""

    replicas: int = Field(default=1, ge=1, le=16)
    port: Port | None = None
    ttft: Duration = 0.02
    itl: Duration = 0.005
    max_concurrency: int = Field(default=256, ge=1)
    failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    failure_kind: Literal["500", "429", "timeout", "reset"] = "500"
    echo: bool = False
    chunk_bytes: int = Field(default=0, ge=0, description="write answers in pieces this big")


class HealthCheck(_Strict):
    path: str = Field(default="/health", pattern=r"^/")
    interval: Duration = 5.0
    timeout: Duration = 1.0
    healthy_threshold: int = Field(default=1, ge=1)
    unhealthy_threshold: int = Field(default=2, ge=1)


class CircuitBreakers(_Strict):
    max_connections: int = Field(default=1024, ge=1)
    max_pending_requests: int = Field(default=1024, ge=1)
    max_requests: int = Field(default=1024, ge=1)
    max_retries: int = Field(default=3, ge=0)


class OutlierDetection(_Strict):
    consecutive_5xx: int = Field(default=5, ge=1)
    consecutive_gateway_failure: int = Field(default=3, ge=1)
    interval: Duration = 5.0
    base_ejection_time: Duration = 30.0
    max_ejection_percent: int = Field(default=50, ge=0, le=100)


class UpstreamTls(_Strict):
    sni: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> UpstreamTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class Cluster(_Strict):
    """A pool of model servers (real endpoints, or simulated ones)."""

    name: Name
    region: Name | None = None
    endpoints: tuple[Annotated[Endpoint, BeforeValidator(_endpoint_from_string)], ...] = ()
    simulate: Simulate | None = None
    protocol: Literal["http1", "http2"] = "http1"
    connect_timeout: Duration = 1.0
    health_check: HealthCheck | None = None
    circuit_breakers: CircuitBreakers = CircuitBreakers()
    outlier_detection: OutlierDetection | None = OutlierDetection()
    tls: UpstreamTls | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Cluster:
        if self.endpoints and self.simulate is not None:
            raise ValueError("give either endpoints or simulate, not both")
        if not self.endpoints and self.simulate is None:
            raise ValueError("needs endpoints (host:port list) or simulate: {}")
        return self


class BudgetStore(_Strict):
    """Where budget counters live: one process (``memory``) or shared (``redis``)."""

    kind: Literal["memory", "redis"] = "memory"
    url: str = "redis://127.0.0.1:6379/0"


class ExtProc(_Strict):
    """The inline processor every gateway listener calls (tenancy, routing, metering)."""

    address: str = "127.0.0.1"
    port: Port = 18080
    message_timeout: Duration = 5.0
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    budget_store: BudgetStore = BudgetStore()
    tls: UpstreamTls | None = Field(
        default=None, description="TLS from Envoy to extproc (start it with --tls-cert/--tls-key)"
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and "failure_mode_allow" in data:
            raise ValueError(
                "failure_mode_allow is set per model now (models[].failure_mode_allow); "
                "remove it here"
            )
        return data


class Jwt(_Strict):
    """JWT tenants: Envoy verifies tokens against a local JWKS; extproc reads the claim."""

    issuer: str = Field(min_length=1)
    audiences: tuple[str, ...] = ()
    jwks: str | None = Field(default=None, description="the JWKS document, inline JSON")
    jwks_file: str | None = None
    tenant_claim: str = "tenant"

    @model_validator(mode="after")
    def _one_jwks(self) -> Jwt:
        if (self.jwks is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of jwks (inline JSON) or jwks_file")
        return self

    @field_validator("jwks")
    @classmethod
    def _key_set(cls, jwks: str | None) -> str | None:
        """Envoy NACKs a JWKS that is not JSON or holds no keys; say so at validation time."""
        if jwks is None:
            return None
        try:
            document = json.loads(jwks)
        except ValueError as exc:
            raise ValueError(f"jwks is not valid JSON: {exc}") from None
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list) or not keys:
            raise ValueError('jwks needs a non-empty "keys" list')
        return jwks


class GrpcService(_Strict):
    """A name gRPC clients dial as ``xds:///NAME`` (proxyless, via gRPC's own xDS client)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")]
    cluster: Name


class Tracing(_Strict):
    """OpenTelemetry traces: Envoy and extproc both export OTLP/gRPC to one collector."""

    collector: Annotated[Endpoint, BeforeValidator(_endpoint_from_string)]
    sampling_percent: float = Field(default=100.0, ge=0.0, le=100.0)
    service_name: str = "smesh-gateway"


class MeshConfig(_Strict):
    """The whole document."""

    listeners: tuple[Listener, ...] = (Listener(name="gateway", port=10000),)
    extproc: ExtProc | None = None
    jwt: Jwt | None = None
    tracing: Tracing | None = None
    grpc_services: tuple[GrpcService, ...] = ()
    guards: tuple[Guard, ...] = ()
    audit: Audit | None = None
    tenants: tuple[Tenant, ...] = ()
    models: tuple[Model, ...] = ()
    clusters: tuple[Cluster, ...] = ()
