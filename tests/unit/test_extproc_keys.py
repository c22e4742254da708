"""Tests for smesh.extproc.keys."""

from __future__ import annotations

import re

from smesh.config import schema as config
from smesh.extproc.keys import KEY_PREFIX, hash_api_key, key_matches, new_api_key


def test_new_keys_are_prefixed_long_and_unique() -> None:
    """A key starts with sk-smesh-, carries 256 random bits, and never repeats."""
    keys = {new_api_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith(KEY_PREFIX)
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", key.removeprefix(KEY_PREFIX))


def test_hash_has_the_format_config_accepts() -> None:
    """The hash is sha256: + 64 hex digits, and a tenant config accepts it."""
    hashed = hash_api_key(new_api_key())
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", hashed)
    tenant = config.Tenant(name="acme", api_keys=(hashed,))
    assert tenant.api_keys == (hashed,)


def test_hash_is_stable_sha256() -> None:
    """The same key always hashes the same (the known SHA-256 of 'abc')."""
    assert hash_api_key("abc") == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_key_matches_only_its_own_hash() -> None:
    """A key matches its hash; another key, a changed hash or garbage does not."""
    key = new_api_key()
    hashed = hash_api_key(key)
    assert key_matches(key, hashed)
    assert not key_matches(new_api_key(), hashed)
    assert not key_matches(key, hashed[:-1] + ("0" if hashed[-1] != "0" else "1"))
    assert not key_matches(key, "")
    assert not key_matches(key, "sha256:not-hex-é")
