"""The servicer's decision → protobuf translation: what Envoy reads back from it."""

from __future__ import annotations

import enum

from google.protobuf import json_format

from smesh.contract import MODEL_HEADER, REQUEST_NAMESPACE
from smesh.extproc.processor import Continue, Reply
from smesh.extproc.servicer import _respond


class _Region(enum.StrEnum):
    EU = "eu"


def _forward(metadata: dict[str, object], model: str = "m") -> Continue:
    return Continue(
        set_headers={MODEL_HEADER: model},
        remove_headers=["authorization"],
        clear_route_cache=True,
        metadata={REQUEST_NAMESPACE: metadata},
    )


def test_metadata_keeps_each_value_type() -> None:
    """Envoy and the access log read these back: a bool stays a bool, not the number 1."""
    fields = {
        "tenant": "acme",
        "stream": True,
        "started_at": 1764856000.25,
        "tokens": 1500,
        "reservation": [1500, 29414000, 20426, "hold-1", False, None],
        "entities": {"EMAIL": 2, "nested": {"deep": "x"}},
        "region": _Region.EU,
        "missing": None,
    }
    response = _respond("request_body", _forward(fields))
    struct = response.dynamic_metadata.fields[REQUEST_NAMESPACE].struct_value
    values = struct.fields
    assert values["stream"].WhichOneof("kind") == "bool_value"
    assert values["tokens"].WhichOneof("kind") == "number_value"
    assert values["region"].string_value == "eu"
    assert values["missing"].WhichOneof("kind") == "null_value"
    assert json_format.MessageToDict(struct) == {
        "tenant": "acme",
        "stream": True,
        "started_at": 1764856000.25,
        "tokens": 1500.0,
        "reservation": [1500.0, 29414000.0, 20426.0, "hold-1", False, None],
        "entities": {"EMAIL": 2.0, "nested": {"deep": "x"}},
        "region": "eu",
        "missing": None,
    }


def test_header_options_are_not_shared_between_responses() -> None:
    """Header options are built once per (key, value); each response still owns its copy."""
    first = _respond("request_body", _forward({"tenant": "a"}))
    second = _respond("request_body", _forward({"tenant": "a"}))
    first.request_body.response.header_mutation.set_headers[0].header.raw_value = b"changed"
    options = second.request_body.response.header_mutation.set_headers
    assert [(o.header.key, o.header.raw_value) for o in options] == [(MODEL_HEADER, b"m")]
    again = _respond("request_body", _forward({"tenant": "a"}))
    assert again.request_body.response.header_mutation.set_headers[0].header.raw_value == b"m"
    assert again.request_body.response.clear_route_cache


def test_a_reply_is_an_immediate_response_with_its_headers() -> None:
    response = _respond("request_body", Reply(429, b"{}", {"retry-after": "3"}))
    immediate = response.immediate_response
    assert immediate.status.code == 429 and immediate.body == b"{}"
    assert [(o.header.key, o.header.raw_value) for o in immediate.headers.set_headers] == [
        ("retry-after", b"3")
    ]
