"""Hostile requests for the property tests: bodies and headers, as hypothesis strategies.

Most bodies start as a plausible request (so the checks past parsing run too) and are then
spoiled: a field of the wrong type, a repeated key, a byte that is not UTF-8, a cut in the
middle. Others are arbitrary bytes or arbitrary JSON, nested up to 1,500 levels, or exactly
at Envoy's size limit; and byte edits of a few valid requests (:data:`REQUEST_SEEDS`).
"""

from __future__ import annotations

from hypothesis import strategies as st

from tests.property.gateway import EMAIL, KEYS, LIMIT
from tests.property.json_text import (
    NOT_UTF8,
    NUMBERS,
    array,
    dumps,
    encode,
    json_values,
    mutated,
    obj,
    texts,
    words,
)

__all__ = [
    "ENDPOINTS",
    "REQUEST_SEEDS",
    "deeply_nested_bodies",
    "duplicate_key_bodies",
    "hostile_headers",
    "mutated_requests",
    "request_bodies",
    "sized_bodies",
]

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
_REQUIRED = {
    "/v1/chat/completions": "messages",
    "/v1/completions": "prompt",
    "/v1/embeddings": "input",
}
# Model names a body may carry: usable, an alias, another tenant's, outside the region, none.
MODEL_NAMES = (
    "chat",
    "gpt-4o-mini",
    "embed",
    "far",
    "secret",
    "",
    "nope",
    "CHAT",
    "chat ",
    "chat\x00",
)
FIELDS = (
    "model",
    "messages",
    "prompt",
    "input",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "user",
    "tools",
)
# -- request bodies -------------------------------------------------------------------------


def _either(plausible: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Mostly a plausible value, sometimes any JSON value at all (wrong type, odd shape)."""
    return st.one_of(plausible, plausible, json_values)


_content_parts = st.one_of(
    words.map(lambda t: dumps({"type": "text", "text": t})),
    texts.map(lambda u: dumps({"type": "image_url", "image_url": {"url": u}})),
    st.tuples(
        st.one_of(st.sampled_from(("input_audio", "file", "refusal", "TEXT", "text ")), texts),
        words,
    ).map(lambda p: dumps({"type": p[0], "text": p[1]})),
    json_values,
)
_contents = st.one_of(words.map(dumps), st.lists(_content_parts, max_size=4).map(array))
_roles = st.sampled_from(("user", "system", "assistant", "tool", "developer", "")).map(dumps)
_tool_calls = st.lists(
    words.map(
        lambda args: dumps(
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": args}}
        )
    ),
    max_size=2,
).map(array)


@st.composite
def _messages_text(draw: st.DrawFn) -> str:
    messages = []
    for _ in range(draw(st.integers(0, 4))):
        pairs = [("role", draw(_either(_roles))), ("content", draw(_either(_contents)))]
        extra = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(("content", "role", "tool_calls", "name", "refusal")),
                    st.one_of(_contents, _tool_calls, json_values),
                ),
                max_size=2,
            )
        )
        pairs += extra
        pairs = draw(st.permutations(pairs))
        messages.append(obj([(dumps(k), v) for k, v in pairs]))
    return array(messages)


_token_lists = st.lists(st.one_of(words.map(dumps), st.integers(-5, 2**40).map(str)), max_size=4)
_prompts = st.one_of(words.map(dumps), _token_lists.map(array))
_caps = st.one_of(
    st.integers(-3, 100).map(str), st.sampled_from(NUMBERS), st.sampled_from(('"5"', "true"))
)
_booleans = st.sampled_from(("true", "false"))
_stream_options = st.one_of(
    _booleans.map(lambda b: '{"include_usage":' + b + "}"),
    st.just("{}"),
    json_values.map(lambda v: '{"include_usage":' + v + "}"),
)
_field_values: dict[str, st.SearchStrategy[str]] = {
    "model": st.sampled_from(MODEL_NAMES).map(dumps),
    "messages": _messages_text(),
    "prompt": _prompts,
    "input": _prompts,
    "stream": _booleans,
    "stream_options": _stream_options,
    "max_tokens": _caps,
    "max_completion_tokens": _caps,
    "n": st.integers(-1, 3).map(str),
    "user": words.map(dumps),
    "tools": st.just('[{"type":"function","function":{"name":"f","parameters":{}}}]'),
}
_any_field = st.one_of(
    *(_either(strategy).map(lambda v, k=k: (k, v)) for k, strategy in _field_values.items()),
    st.tuples(texts, json_values),
)


@st.composite
def _spoiled(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw``, mostly as is; else with bytes that are not UTF-8, cut short, or wrapped."""
    how = draw(
        st.sampled_from(("keep", "keep", "keep", "keep", "bad-utf8", "cut", "bom", "tail", "array"))
    )
    if how == "bad-utf8":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from(NOT_UTF8)) + raw[at:]
    if how == "cut":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "tail":
        return raw + draw(st.sampled_from((b"x", b"}", b",", b" {}", b"\x00")))
    if how == "array":
        return b"[" + raw + b"]"
    return raw


@st.composite
def request_bodies(draw: st.DrawFn, endpoint: str) -> bytes:
    """A body for ``endpoint``: from arbitrary bytes to a valid request with a twist."""
    kind = draw(st.sampled_from(("request", "request", "request", "json", "bytes")))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return draw(_spoiled(encode(draw(json_values))))
    fields: list[tuple[str, str]] = []
    if draw(st.integers(0, 3)) > 0:  # a plausible core: a model and the required input
        required = _REQUIRED[endpoint]
        fields += [
            ("model", draw(_field_values["model"])),
            (required, draw(_field_values[required])),
        ]
    fields += draw(st.lists(_any_field, max_size=5))
    fields = draw(st.permutations(fields))
    return draw(_spoiled(encode(obj([(dumps(k), v) for k, v in fields]))))


@st.composite
def duplicate_key_bodies(draw: st.DrawFn, endpoint: str) -> bytes:
    """A valid request that repeats keys: the model, the input, inside messages and parts."""
    required = _REQUIRED[endpoint]
    models = draw(st.lists(st.sampled_from(MODEL_NAMES).map(dumps), min_size=1, max_size=4))
    inputs = draw(st.lists(_field_values[required], min_size=1, max_size=3))
    pairs = [("model", m) for m in models] + [(required, v) for v in inputs]
    if endpoint == "/v1/chat/completions" and draw(st.booleans()):
        # One message whose content is given twice: the guard must scan what is forwarded.
        contents = draw(st.lists(_contents, min_size=2, max_size=3))
        message = obj([('"role"', '"user"')] + [('"content"', c) for c in contents])
        pairs.append(("messages", array([message])))
    pairs += [
        (k, draw(_field_values[k]))
        for k in draw(st.lists(st.sampled_from(FIELDS[4:8]), max_size=3))
    ]
    pairs = draw(st.permutations(pairs))
    spaced = draw(st.sampled_from((",", ", ", ",\n  ")))
    return encode("{" + spaced.join(f"{dumps(k)}: {v}" for k, v in pairs) + "}")


@st.composite
def deeply_nested_bodies(draw: st.DrawFn, endpoint: str) -> bytes:
    """A valid request but for one value nested 1..1500 levels deep, anywhere."""
    # Any depth, with extra weight where behaviour changes: orjson writes ~254 levels and
    # reads 1,024; Python's recursion limit (1,000 frames) lies between the two.
    depth = draw(st.one_of(st.integers(1, 1500), st.integers(240, 270), st.integers(900, 1030)))
    shape = draw(st.sampled_from(("array", "object", "parts")))
    if shape == "array":
        nested = "[" * depth + "]" * depth
    elif shape == "object":
        nested = '{"a":' * depth + "1" + "}" * depth
    else:
        nested = '[{"type":"text","text":' * depth + '"hi"' + "}]" * depth
    where = draw(
        st.sampled_from(
            (
                "extra",
                "model",
                "stream_options",
                "max_tokens",
                "input",
                "role",
                "content",
                "message",
            )
        )
    )
    message = {"role": '"user"', "content": '"hi"'}
    if where in message:
        message[where] = nested
    messages = array([obj([(dumps(k), v) for k, v in message.items()])])
    if where == "message":
        messages = array([messages[1:-1], nested])
    inputs = {
        "/v1/chat/completions": ("messages", messages),
        "/v1/completions": ("prompt", nested if where == "input" else '"hi"'),
        "/v1/embeddings": ("input", nested if where == "input" else '"hi"'),
    }
    pairs = [("model", nested if where == "model" else '"chat"'), inputs[endpoint]]
    if where == "stream_options":
        pairs += [("stream", "true"), ("stream_options", nested)]
    if where in ("extra", "max_tokens"):
        pairs.append((where, nested))
    return encode(obj([(dumps(k), v) for k, v in pairs]))


@st.composite
def sized_bodies(draw: st.DrawFn, endpoint: str) -> bytes:
    """A body of exactly ``LIMIT - 1``, ``LIMIT`` or ``LIMIT + 1`` bytes (Envoy's limit)."""
    size = LIMIT + draw(st.sampled_from((0, -1, 1)))
    unit = draw(
        st.sampled_from(
            (b"a", b"word ", (EMAIL + " ").encode(), "é".encode(), b"\\ud83d\\ude00", b"\\n", b" ")
        )
    )
    layout = draw(st.sampled_from(("string", "list", "messages")))
    model = b'{"model":"chat",'
    if layout == "messages" and endpoint == "/v1/chat/completions":
        one = b'{"role":"user","content":"' + unit * 8 + b'"}'
        head, tail = model + b'"messages":[', b"]}"
        count = (size - len(head) - len(tail)) // (len(one) + 1)
        body = head + b",".join([one] * count) + tail
    elif layout == "list" and endpoint != "/v1/chat/completions":
        key = b'"prompt":[' if endpoint == "/v1/completions" else b'"input":['
        head, tail = model + key, b"]}"
        count = (size - len(head) - len(tail)) // 2
        body = head + b",".join([b"7"] * count) + tail
    else:
        if endpoint == "/v1/chat/completions":
            head, tail = model + b'"messages":[{"role":"user","content":"', b'"}]}'
        else:
            key = b'"prompt":"' if endpoint == "/v1/completions" else b'"input":"'
            head, tail = model + key, b'"}'
        room = size - len(head) - len(tail)
        body = head + (unit * (room // len(unit) + 1))[:room] + tail
    # Pad with whitespace (valid JSON) or cut (invalid) to the exact size.
    return body[:-1] + b" " * (size - len(body)) + body[-1:] if len(body) < size else body[:size]


# -- byte edits of valid requests -----------------------------------------------------

_EMAIL_CHAT = '{"model":"chat","messages":[{"role":"user","content":"hi EMAIL"}]}'
REQUEST_SEEDS = tuple(
    (endpoint, seed.replace("EMAIL", EMAIL).encode())
    for endpoint, seed in (
        ("/v1/chat/completions", _EMAIL_CHAT),
        (
            "/v1/chat/completions",
            '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":false},'
            '"max_tokens":5,"messages":[{"role":"system","content":"be brief"},{"role":"user",'
            '"content":[{"type":"text","text":"mail EMAIL"},{"type":"image_url",'
            '"image_url":{"url":"http://x"}}]}]}',
        ),
        (
            "/v1/chat/completions",
            '{"model":"chat","max_completion_tokens":3,"messages":[{"role":"assistant",'
            '"content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f",'
            '"arguments":"{\\"to\\": \\"EMAIL\\"}"}}]},{"role":"tool","content":"ok"}]}',
        ),
        (
            "/v1/chat/completions",
            # Escaped key names: the client's bytes go upstream as sent when nothing changes.
            '{"mod\\u0065l":"chat","max_tokens":2,"messages":[{"r\\u006fle":"user",'
            '"content":"EMAIL\\u0021"}]}',
        ),
        ("/v1/completions", '{"model":"chat","prompt":["hi EMAIL",1,2],"max_tokens":3}'),
        ("/v1/completions", '{"model":"chat","prompt":"EMAIL","stream":true}'),
        ("/v1/embeddings", '{"model":"embed","input":["a","EMAIL"]}'),
    )
)
_REQUEST_TOKENS = (
    b'"model":"secret",',
    b'"model":"chat",',
    b'"model":',
    b'"messages":[]',
    b'"stream":true,',
    b'"max_tokens":0,',
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"\\",
    b"\\ud800",
    b"\\udfff",
    b"1e400",
    b"18446744073709551616",
    b"null",
    b"-",
    b" ",
    b"\x00",
    *NOT_UTF8,
)
mutated_requests = st.sampled_from(REQUEST_SEEDS).flatmap(
    lambda seed: st.tuples(st.just(seed[0]), mutated(seed[1], _REQUEST_TOKENS))
)


# -- request headers ------------------------------------------------------------------------

_PATHS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/chat/completions?x=1",
    "/v1/chat/completions/",
    "/v1/models",
    "/v1/models/",
    "/v1/models/chat",
    "/v1/models/secret",
    "/v1/models/../chat",
    "/V1/CHAT/COMPLETIONS",
    "",
    "*",
)
_METHODS = ("POST", "GET", "PUT", "post", "", "DELETE", "OPTIONS")
_CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/vnd.api+json",
    "+json",
    "/+json",
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded",
    ";",
)
_NAMES = (
    ":path",
    ":method",
    ":authority",
    "content-type",
    "authorization",
    "api-key",
    "x-smesh-model",
    "x-smesh-tenant",
    "x-smesh-residency",
    "traceparent",
    "x-request-id",
    "content-length",
)
_values = st.one_of(st.binary(max_size=40), st.text(max_size=40))


def _credentials() -> st.SearchStrategy[list[tuple[str, bytes | str]]]:
    keys = st.sampled_from(sorted(KEYS.values()))
    return st.one_of(
        keys.map(lambda k: [("authorization", f"Bearer {k}")]),
        keys.map(lambda k: [("authorization", f"bEaReR   {k} ")]),
        keys.map(lambda k: [("api-key", k)]),
        keys.map(lambda k: [("authorization", f"Bearer {k}".encode() + b"\xff")]),
        st.sampled_from(([], [("authorization", "Bearer ")], [("authorization", "Basic eDp5")])),
        _values.map(lambda v: [("authorization", v)]),
    )


@st.composite
def hostile_headers(draw: st.DrawFn) -> list[tuple[str, bytes | str]]:
    """Pseudo-headers present, missing, odd or repeated; credentials of every shape; noise."""
    pairs: list[tuple[str, bytes | str]] = []
    path = draw(st.one_of(st.sampled_from(_PATHS), texts, st.none()))
    if path is not None:
        pairs.append((":path", path))
    method = draw(st.one_of(st.sampled_from(_METHODS), texts, st.none()))
    if method is not None:
        pairs.append((":method", method))
    content_type = draw(st.one_of(st.sampled_from(_CONTENT_TYPES), texts, st.none()))
    if content_type is not None:
        pairs.append(("content-type", content_type))
    pairs += draw(_credentials())
    names = st.one_of(st.sampled_from(_NAMES), st.text(max_size=20))
    pairs += draw(st.lists(st.tuples(names, _values), max_size=6))
    if draw(st.integers(0, 9)) == 0:  # near and past Envoy's 100-header limit
        pairs += [(f"x-pad-{i}", b"v") for i in range(draw(st.integers(90, 110)))]
    return pairs
