"""Headers a client sends that must not reach a model server as sent.

Clients are external: with ``trusted_hops: 0`` the peer address is the last
``x-forwarded-for`` element (for a loopback peer Envoy writes its own address there),
Envoy makes its own ``x-request-id``, and Envoy-internal headers, cookies and proxy
credentials from a client stop at the gateway.
"""

from __future__ import annotations

import itertools
import socket

import psutil
import pytest

from tests.reliability.backend import Record
from tests.reliability.mesh import Mesh

pytestmark = pytest.mark.integration

_IDS = itertools.count()


def upstream(mesh: Mesh, *headers: tuple[str, str]) -> Record:
    """What a backend received for one allowed chat request carrying ``headers``."""
    test_id = f"hygiene-{next(_IDS)}"
    mark = mesh.mark()
    answer = mesh.chat("alpha", "alpha-chat", ("x-test-id", test_id), *headers)
    assert answer.status == 200, (answer.status, answer.body[:200])
    [record] = [r for r in mesh.records(mark) if r.test_id == test_id]
    return record


def this_machine() -> set[str]:
    """Every address of this machine: for a loopback peer Envoy appends its own address."""
    return {
        address.address.split("%")[0]
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family in {socket.AF_INET, socket.AF_INET6}
    }


@pytest.mark.parametrize("client_xff", [None, "6.6.6.6"], ids=["no-xff", "spoofed-xff"])
def test_forwarded_for_ends_with_the_peer_address(mesh: Mesh, client_xff: str | None) -> None:
    """Upstream x-forwarded-for ends with the real peer (this machine), whatever the client sent."""
    record = upstream(mesh, *([("x-forwarded-for", client_xff)] if client_xff else []))
    values = record.header("x-forwarded-for")
    hops = [hop.strip() for value in values for hop in value.split(",")]
    assert hops, "no x-forwarded-for upstream: the peer address was not appended"
    assert hops[-1] in this_machine(), f"upstream x-forwarded-for: {values}"


def test_client_request_id_is_not_forwarded(mesh: Mesh) -> None:
    """Envoy makes its own x-request-id; the client's never reaches a model server verbatim."""
    record = upstream(mesh, ("x-request-id", "client-chosen-request-id"))
    ids = record.header("x-request-id")
    assert "client-chosen-request-id" not in ids, f"upstream x-request-id: {ids}"
    assert len(ids) == 1, f"upstream x-request-id: {ids}"


def test_client_envoy_original_path_is_dropped(mesh: Mesh) -> None:
    """A client's x-envoy-original-path (read by access logs as the real path) stops at Envoy."""
    record = upstream(mesh, ("x-envoy-original-path", "/admin/secret"))
    assert record.header("x-envoy-original-path") == []


@pytest.mark.parametrize(
    ("name", "value"),
    [("cookie", "session=client-secret"), ("proxy-authorization", "Basic dXNlcjpwYXNz")],
)
def test_client_cookie_and_proxy_credentials_are_dropped(mesh: Mesh, name: str, value: str) -> None:
    """Cookies and proxy credentials are the client's business with the gateway, not the model's."""
    record = upstream(mesh, (name, value))
    assert record.header(name) == [], f"upstream {name}: {record.header(name)}"
