"""Tiny converters from Python values to the protobuf well-known types Envoy fields use."""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

__all__ = ["int_to_uint32", "message_to_any", "seconds_to_duration"]


def seconds_to_duration(seconds: float) -> duration_pb2.Duration:
    """Config durations are float seconds; Envoy wants a ``Duration`` (nanosecond precision)."""
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1_000_000_000))
    return duration


def int_to_uint32(value: int) -> wrappers_pb2.UInt32Value:
    """Envoy marks "set" vs "default" with wrapper types; an explicit 0 must stay explicit."""
    return wrappers_pb2.UInt32Value(value=value)


def message_to_any(message: Message) -> any_pb2.Any:
    """Pack an extension's typed config (``typed_config`` fields are ``Any``)."""
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
