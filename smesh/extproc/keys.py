"""API keys: minted once, shown once, stored only as a SHA-256 digest.

``mesh.yaml`` holds ``sha256:<hex>`` (the format the config validates); the plain key
exists only in the client's hands. Keys carry 256 random bits, so a fast unsalted hash is
enough: there is no dictionary to attack, and extproc hashes on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["KEY_PREFIX", "hash_api_key", "key_matches", "new_api_key"]

KEY_PREFIX = "sk-smesh-"
_HASH_PREFIX = "sha256:"


def new_api_key() -> str:
    """A fresh random key: ``sk-smesh-`` and 32 random bytes, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """The stored form of ``key``: ``sha256:`` and 64 lowercase hex digits."""
    return _HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def key_matches(key: str, hashed: str) -> bool:
    """Whether ``key`` hashes to ``hashed``, compared in constant time."""
    return hmac.compare_digest(hash_api_key(key).encode(), hashed.encode())
