"""Access-log entries of any shape: :func:`completion_of` reads them without raising.

The ``smesh.request`` namespace is written by extproc, ``smesh.usage`` by Envoy from the
upstream's answer (so its numbers are the upstream's to choose); one entry that raises loses
its whole batch (every settlement and audit record in it). Values here are anything a
metadata ``Struct`` can hold, under the keys completion_of reads and under others.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smesh.contract import REQUEST_NAMESPACE, USAGE_NAMESPACE
from smesh.extproc.completion import Completion, completion_of
from tests.property.gateway import count, scaled
from tests.property.json_text import struct_values

CI = settings(
    max_examples=300,
    deadline=timedelta(seconds=1),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOW_TIMEOUT_S = 900

_REQUEST_KEYS = (
    "tenant",
    "model",
    "endpoint",
    "stream",
    "started_at",
    "overhead_ms",
    "traceparent",
    "reservation",
    "guards",
    "entities",
    "flags",
)
_USAGE_KEYS = ("prompt_tokens", "completion_tokens")


def _fields(keys: tuple[str, ...], finite: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Any of ``keys`` (plausible values or any value) and a few keys nobody reads."""
    values = struct_values(finite)
    numbers = st.floats(allow_nan=not finite, allow_infinity=not finite)
    plausible = {
        "tenant": st.one_of(st.sampled_from(("acme", "")), values),
        "reservation": st.one_of(
            st.tuples(st.integers(0, 10**12), st.integers(0, 10**8), st.integers(0, 10**5)).map(
                lambda t: f"{t[0]} {t[1]} {t[2]} hold"
            ),
            st.lists(st.one_of(numbers, st.text(max_size=8)), min_size=4, max_size=4).map(
                lambda parts: " ".join(str(p) for p in parts)
            ),
            values,
        ),
    }
    known = st.fixed_dictionaries({}, optional={k: plausible.get(k, values) for k in keys})
    other = st.dictionaries(st.text(max_size=10), values, max_size=3)
    return st.tuples(other, known).map(lambda p: {**p[0], **p[1]})


@st.composite
def entries(draw: st.DrawFn, finite: bool) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.request.request_id = draw(st.text(max_size=20))
    entry.response.response_code.value = draw(st.integers(0, 2**32 - 1))
    common = entry.common_properties
    common.upstream_cluster = draw(st.text(max_size=10))
    seconds = st.integers(-(10**11), 10**11)
    if draw(st.booleans()):
        common.time_to_last_downstream_tx_byte.seconds = draw(seconds)
        common.time_to_last_downstream_tx_byte.nanos = draw(st.integers(-999_999_999, 999_999_999))
    if draw(st.booleans()):
        common.time_to_first_downstream_tx_byte.seconds = draw(seconds)
    if draw(st.booleans()):  # a valid Timestamp (years 1..9999), as Envoy's clock gives
        common.start_time.seconds = draw(st.integers(-62_135_596_800, 253_402_300_799))
    namespaces = draw(
        st.sets(st.sampled_from((REQUEST_NAMESPACE, USAGE_NAMESPACE, "other")), max_size=3)
    )
    for namespace in namespaces:
        keys = {REQUEST_NAMESPACE: _REQUEST_KEYS, USAGE_NAMESPACE: _USAGE_KEYS}.get(namespace, ())
        common.metadata.filter_metadata[namespace].update(draw(_fields(keys, finite)))
    return entry


def read(entry: accesslog_pb2.HTTPAccessLogEntry) -> None:
    done = completion_of(entry)
    assert done is None or isinstance(done, Completion)
    if done is not None:
        assert done.tenant and isinstance(done.actual_tokens(), int)


def any_entry(entry: accesslog_pb2.HTTPAccessLogEntry) -> None:
    read(entry)
    count("access_log_any")


def _infinite_usage() -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    metadata = entry.common_properties.metadata.filter_metadata
    metadata[REQUEST_NAMESPACE].update({"tenant": "acme"})
    metadata[USAGE_NAMESPACE].update({"prompt_tokens": float("inf")})
    return entry


@CI
@example(entry=_infinite_usage())
@given(entry=entries(finite=False))
def test_any_access_log_entry_is_read_without_raising(entry: Any) -> None:
    """NaN and infinities included: a number that is not a count is no count, not a crash.

    Fails until completion_of checks numbers are finite; no slow variant (the finite one
    below covers every other shape).
    """
    any_entry(entry)


def finite_entry(entry: accesslog_pb2.HTTPAccessLogEntry) -> None:
    read(entry)
    count("access_log_finite")


@CI
@given(entry=entries(finite=True))
def test_any_finite_access_log_entry_is_read_without_raising(entry: Any) -> None:
    """Every shape of metadata with finite numbers: a Completion or None, never an exception."""
    finite_entry(entry)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
@settings(CI, max_examples=scaled(4_000))
@given(entry=entries(finite=True))
def test_any_finite_access_log_entry_is_read_without_raising_many(entry: Any) -> None:
    """As above, on 4,000 inputs."""
    finite_entry(entry)
