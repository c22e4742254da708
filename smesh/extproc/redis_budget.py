"""The Redis budget store: the same rules as :mod:`smesh.extproc.budget`, shared by replicas.

When more than one extproc replica serves a tenant, each one's counters must be the same
counters, and the check-then-add of a reservation must be one step, or two replicas
could both admit the last request that fits. So every operation is one Lua script
(registered once, sent by EVALSHA; redis-py reloads it after a server restart), which
Redis runs atomically.

Keys: ``{prefix}:{{tenant}}:rpm:{minute}``, ``…:tpm:{minute}`` and ``…:tpd:{day}``. The
``{tenant}`` hash tag puts one tenant's keys on one Redis Cluster slot, which a script
touching several keys requires. A key gets its TTL when it is created (minute keys 120 s,
day keys 2 days), so no key outlives its window by much and nothing needs a sweeper.
Windows are computed from the replica's clock (``now``), so replicas need NTP, nothing
more.

Failure: a connection error, a timeout or any other Redis error raises
:class:`~smesh.extproc.budget.BudgetUnavailable`; callers fail closed (503). A dropped
pooled connection (e.g. Redis restarted) is retried once; a timeout is not, because the
script may have run and a second ``settle`` would count twice.
"""

from __future__ import annotations

import time
from typing import cast

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from smesh.config.schema import Budgets
from smesh.extproc.budget import (
    DAY_S,
    Admission,
    BudgetUnavailable,
    Reservation,
    check_tokens,
    refusal,
    window_of,
)

__all__ = ["RedisBudgetStore"]

MINUTE_TTL_S = 120
DAY_TTL_S = 2 * DAY_S

# Shared by the scripts: add ARGV amount to a key; a key created here gets its TTL.
# INCRBY returns exactly the amount only when the key was just created (or held 0).
_ADD = """
local function add(key, amount, ttl)
  if redis.call('INCRBY', key, amount) == amount then
    redis.call('EXPIRE', key, ttl)
  end
end
local function over(key, limit, amount)
  return limit > 0 and tonumber(redis.call('GET', key) or '0') + amount > limit
end
"""

# KEYS: rpm, tpm, tpd. ARGV: rpm, tpm, tpd limits (0 = unlimited), tokens, ttls.
# Returns 0 when admitted, else a bit mask of the windows it does not fit (1 rpm, 2 tpm, 4 tpd).
_RESERVE = (
    _ADD
    + """
local tokens = tonumber(ARGV[4])
local refused, bits, amounts = 0, {1, 2, 4}, {1, tokens, tokens}
for i = 1, 3 do
  if over(KEYS[i], tonumber(ARGV[i]), amounts[i]) then refused = refused + bits[i] end
end
if refused > 0 then return refused end
add(KEYS[1], 1, ARGV[5])
add(KEYS[2], tokens, ARGV[5])
add(KEYS[3], tokens, ARGV[6])
return 0
"""
)

# KEYS: tpm, tpd. ARGV: tpm, tpd limits (0 = unlimited), tokens, ttls. Returns 1 or 0.
_EXTEND = (
    _ADD
    + """
local tokens = tonumber(ARGV[3])
if over(KEYS[1], tonumber(ARGV[1]), tokens) or over(KEYS[2], tonumber(ARGV[2]), tokens) then
  return 0
end
add(KEYS[1], tonumber(ARGV[3]), ARGV[4])
add(KEYS[2], tonumber(ARGV[3]), ARGV[5])
return 1
"""
)

# KEYS: tpm, tpd of the reservation. ARGV: delta (an integer string, passed on as is so
# Lua's doubles never format a count). A key that expired stays gone; none goes below 0.
_SETTLE = """
for i = 1, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 and redis.call('INCRBY', KEYS[i], ARGV[1]) < 0 then
    redis.call('SET', KEYS[i], 0, 'KEEPTTL')
  end
end
return 0
"""

_LIMIT_BITS = (
    (1, "requests_per_minute"),
    (2, "tokens_per_minute"),
    (4, "tokens_per_day"),
)


class RedisBudgetStore:
    """Reservations counted in Redis; thread-safe (redis-py's connection pool)."""

    def __init__(
        self, url: str, key_prefix: str = "smesh:budget", socket_timeout: float = 0.25
    ) -> None:
        self._prefix = key_prefix
        self._url = url
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        self._reserve = self._client.register_script(_RESERVE)
        self._extend = self._client.register_script(_EXTEND)
        self._settle = self._client.register_script(_SETTLE)

    def key(self, tenant: str, kind: str, window: int) -> str:
        """The key of one counter; ``kind`` is ``rpm``, ``tpm`` or ``tpd``."""
        return f"{self._prefix}:{{{tenant}}}:{kind}:{window}"

    def reserve(
        self, tenant: str, limits: Budgets, tokens: int, now: float | None = None
    ) -> Admission:
        """Admit and count one request of ``tokens`` unless a window is already spent."""
        check_tokens(tokens)
        now = time.time() if now is None else now
        minute, day = window_of(now)
        keys = [
            self.key(tenant, "rpm", minute),
            self.key(tenant, "tpm", minute),
            self.key(tenant, "tpd", day),
        ]
        args = [
            limits.requests_per_minute or 0,
            limits.tokens_per_minute or 0,
            limits.tokens_per_day or 0,
            tokens,
            MINUTE_TTL_S,
            DAY_TTL_S,
        ]
        refused = self._run(self._reserve, keys, args)
        if refused:
            return refusal([name for bit, name in _LIMIT_BITS if refused & bit], now)
        return Admission(True, Reservation(tenant, tokens, minute, day))

    def extend(
        self, reservation: Reservation, limits: Budgets, tokens: int, now: float | None = None
    ) -> Reservation | None:
        """Add ``tokens`` to a running reservation, or ``None`` when a token budget is spent."""
        check_tokens(tokens)
        now = time.time() if now is None else now
        minute, day = window_of(now)
        keys = [
            self.key(reservation.tenant, "tpm", minute),
            self.key(reservation.tenant, "tpd", day),
        ]
        args = [
            limits.tokens_per_minute or 0,
            limits.tokens_per_day or 0,
            tokens,
            MINUTE_TTL_S,
            DAY_TTL_S,
        ]
        if not self._run(self._extend, keys, args):
            return None
        return Reservation(reservation.tenant, reservation.tokens + tokens, minute, day)

    def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        """Replace the reserved tokens by ``actual_tokens`` in the reservation's windows."""
        keys = [
            self.key(reservation.tenant, "tpm", reservation.minute),
            self.key(reservation.tenant, "tpd", reservation.day),
        ]
        self._run(self._settle, keys, [actual_tokens - reservation.tokens])

    def used(self, tenant: str, now: float | None = None) -> dict[str, int]:
        """Current-window usage per limit name (for tests, metrics and status pages)."""
        now = time.time() if now is None else now
        minute, day = window_of(now)
        names = [name for _, name in _LIMIT_BITS]
        keys = [
            self.key(tenant, "rpm", minute),
            self.key(tenant, "tpm", minute),
            self.key(tenant, "tpd", day),
        ]
        try:
            values = cast("list[bytes | None]", self._client.mget(keys))
        except redis.RedisError as exc:
            raise BudgetUnavailable(f"budget store {self._redacted()} failed: {exc}") from exc
        return {name: int(value or 0) for name, value in zip(names, values, strict=True)}

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def _run(self, script: Script, keys: list[str], args: list[int]) -> int:
        # redis.ConnectionError and redis.TimeoutError are RedisError subclasses; the
        # builtin ones are caught too in case a socket error escapes redis-py.
        try:
            result = script(keys=keys, args=args)
        except (redis.RedisError, ConnectionError, TimeoutError) as exc:
            raise BudgetUnavailable(f"budget store {self._redacted()} failed: {exc}") from exc
        return int(cast("int", result))

    def _redacted(self) -> str:
        """The URL without a password, for error messages."""
        scheme, sep, rest = self._url.partition("://")
        if "@" in rest:
            rest = "***@" + rest.rpartition("@")[2]
        return f"{scheme}{sep}{rest}"
