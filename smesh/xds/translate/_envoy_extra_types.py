"""Typed messages for Envoy extensions this Envoy build has but xds-protos 1.85 does not.

``envoy.filters.http.sse_to_metadata`` (work in progress upstream), its JSON content
parser and ``envoy.filters.http.body_size_limit`` ship in Envoy 1.40 (its
``/server_info`` lists them) but not in the xds-protos wheel. Rather than build their
config as dicts, this module declares the messages with Envoy's own package names and
field numbers, as ``FileDescriptorProto`` objects, and registers them in the default
protobuf pool: the result is an ordinary typed message class whose ``Any`` carries the
type URL Envoy expects. Nested messages Envoy defines elsewhere (``TypedExtensionConfig``,
``JsonToMetadata.Rule``) are the real xds-protos types. If a later xds-protos ships
these files, the pool's own definitions are used instead.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import extension_pb2
from envoy.extensions.filters.http.json_to_metadata.v3 import json_to_metadata_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

__all__ = ["BodySizeLimit", "JsonContentParser", "SseToMetadata"]

_SSE_FILE = "envoy/extensions/filters/http/sse_to_metadata/v3/sse_to_metadata.proto"
_SSE_PACKAGE = "envoy.extensions.filters.http.sse_to_metadata.v3"
_JSON_FILE = "envoy/extensions/content_parsers/json/v3/json_content_parser.proto"
_JSON_PACKAGE = "envoy.extensions.content_parsers.json.v3"

_LIMIT_FILE = "envoy/extensions/filters/http/body_size_limit/v3/body_size_limit.proto"
_LIMIT_PACKAGE = "envoy.extensions.filters.http.body_size_limit.v3"

_F = descriptor_pb2.FieldDescriptorProto


def _field(
    name: str,
    number: int,
    type_name: str | None = None,
    *,
    repeated: bool = False,
    uint32: bool = False,
) -> descriptor_pb2.FieldDescriptorProto:
    field = _F(name=name, number=number, json_name=_camel(name))
    field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if uint32:
        field.type = _F.TYPE_UINT32
    else:
        field.type = _F.TYPE_MESSAGE
        field.type_name = f".{type_name}"
    return field


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _sse_file() -> descriptor_pb2.FileDescriptorProto:
    rules = descriptor_pb2.DescriptorProto(
        name="ProcessingRules",
        field=[
            _field("content_parser", 1, extension_pb2.TypedExtensionConfig.DESCRIPTOR.full_name),
            _field("max_event_size", 2, wrappers_pb2.UInt32Value.DESCRIPTOR.full_name),
        ],
    )
    message = descriptor_pb2.DescriptorProto(
        name="SseToMetadata",
        field=[_field("response_rules", 1, f"{_SSE_PACKAGE}.SseToMetadata.ProcessingRules")],
        nested_type=[rules],
    )
    return descriptor_pb2.FileDescriptorProto(
        name=_SSE_FILE,
        package=_SSE_PACKAGE,
        syntax="proto3",
        dependency=[extension_pb2.DESCRIPTOR.name, wrappers_pb2.DESCRIPTOR.name],
        message_type=[message],
    )


def _json_file() -> descriptor_pb2.FileDescriptorProto:
    rule_config = descriptor_pb2.DescriptorProto(
        name="RuleConfig",
        field=[
            _field("rule", 1, json_to_metadata_pb2.JsonToMetadata.Rule.DESCRIPTOR.full_name),
            _field("stop_processing_after_matches", 2, uint32=True),
        ],
    )
    message = descriptor_pb2.DescriptorProto(
        name="JsonContentParser",
        field=[_field("rules", 1, f"{_JSON_PACKAGE}.JsonContentParser.RuleConfig", repeated=True)],
        nested_type=[rule_config],
    )
    return descriptor_pb2.FileDescriptorProto(
        name=_JSON_FILE,
        package=_JSON_PACKAGE,
        syntax="proto3",
        dependency=[json_to_metadata_pb2.DESCRIPTOR.name],
        message_type=[message],
    )


def _limit_file() -> descriptor_pb2.FileDescriptorProto:
    message = descriptor_pb2.DescriptorProto(
        name="BodySizeLimit",
        field=[_field("max_request_bytes", 1, wrappers_pb2.UInt32Value.DESCRIPTOR.full_name)],
    )
    return descriptor_pb2.FileDescriptorProto(
        name=_LIMIT_FILE,
        package=_LIMIT_PACKAGE,
        syntax="proto3",
        dependency=[wrappers_pb2.DESCRIPTOR.name],
        message_type=[message],
    )


def _message_class(file: descriptor_pb2.FileDescriptorProto, name: str) -> Any:
    pool = descriptor_pool.Default()
    full_name = f"{file.package}.{name}"
    try:
        descriptor = pool.FindMessageTypeByName(full_name)
    except KeyError:
        pool.Add(file)
        descriptor = pool.FindMessageTypeByName(full_name)
    return message_factory.GetMessageClass(descriptor)


SseToMetadata: Any = _message_class(_sse_file(), "SseToMetadata")
JsonContentParser: Any = _message_class(_json_file(), "JsonContentParser")
BodySizeLimit: Any = _message_class(_limit_file(), "BodySizeLimit")
