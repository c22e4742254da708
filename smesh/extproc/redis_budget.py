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
from collections.abc import Sequence
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
    Hold,
    Reservation,
    check_tokens,
    refusal,
    window_of,
)

__all__ = ["RedisBudgetStore"]

MINUTE_TTL_S = 120
DAY_TTL_S = 2 * DAY_S
# Expired holds refunded per call at most (the rest on the next call).
EXPIRE_BATCH = 500

# Shared by the scripts. ``add``: a key created here gets its TTL (INCRBY returns exactly
# the amount only when the key was just created or held 0). ``over``: adding ``amount``
# would pass a limit (0 = unlimited). ``adjust``: add to a window that still exists,
# never below 0. Held reservations live in a sorted set (hold id by deadline) and
# a hash (hold id -> "tokens minute day"); window keys of a hold are rebuilt from
# ARGV prefix (same {tenant} hash tag, so one Redis Cluster slot).
_LIB = """
local function add(key, amount, ttl)
  if redis.call('INCRBY', key, amount) == tonumber(amount) then
    redis.call('EXPIRE', key, ttl)
  end
end
local function over(key, limit, amount)
  return limit > 0 and tonumber(redis.call('GET', key) or '0') + amount > limit
end
local function adjust(key, amount)
  if redis.call('EXISTS', key) == 1 and redis.call('INCRBY', key, amount) < 0 then
    redis.call('SET', key, 0, 'KEEPTTL')
  end
end
local function held(record)
  local tokens, minute, day = string.match(record, '^(%d+) (%d+) (%d+)$')
  return tonumber(tokens), minute, day
end
local function expire_holds(zkey, hkey, prefix, now, batch)
  local ids = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, batch)
  for _, id in ipairs(ids) do
    local record = redis.call('HGET', hkey, id)
    if record then
      local tokens, minute, day = held(record)
      adjust(prefix .. 'tpm:' .. minute, -tokens)
      adjust(prefix .. 'tpd:' .. day, -tokens)
      redis.call('HDEL', hkey, id)
    end
    redis.call('ZREM', zkey, id)
  end
  return #ids
end
"""

# KEYS: rpm, tpm, tpd, holds zset, holds hash. ARGV: rpm, tpm, tpd limits (0 = unlimited),
# tokens, minute ttl, day ttl, now, key prefix, hold id ('' = none), deadline, minute, day.
# Returns 0 when admitted, else a bit mask of the windows it does not fit (1 rpm, 2 tpm, 4 tpd).
_RESERVE = (
    _LIB
    + """
expire_holds(KEYS[4], KEYS[5], ARGV[8], ARGV[7], """
    + str(EXPIRE_BATCH)
    + """)
local tokens = tonumber(ARGV[4])
local refused, bits, amounts = 0, {1, 2, 4}, {1, tokens, tokens}
for i = 1, 3 do
  if over(KEYS[i], tonumber(ARGV[i]), amounts[i]) then refused = refused + bits[i] end
end
if refused > 0 then return refused end
add(KEYS[1], 1, ARGV[5])
add(KEYS[2], ARGV[4], ARGV[5])
add(KEYS[3], ARGV[4], ARGV[6])
if ARGV[9] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[10], ARGV[9])
  redis.call('HSET', KEYS[5], ARGV[9], ARGV[4] .. ' ' .. ARGV[11] .. ' ' .. ARGV[12])
  redis.call('EXPIRE', KEYS[4], ARGV[6])
  redis.call('EXPIRE', KEYS[5], ARGV[6])
end
return 0
"""
)

# KEYS: tpm, tpd (current windows), holds hash. ARGV: tpm, tpd limits (0 = unlimited), tokens,
# ttls, hold id, new total tokens, minute, day. Returns 1 (added) or 0 (does not fit).
_EXTEND = (
    _LIB
    + """
local tokens = tonumber(ARGV[3])
if over(KEYS[1], tonumber(ARGV[1]), tokens) or over(KEYS[2], tonumber(ARGV[2]), tokens) then
  return 0
end
add(KEYS[1], ARGV[3], ARGV[4])
add(KEYS[2], ARGV[3], ARGV[5])
if ARGV[6] ~= '' and redis.call('HEXISTS', KEYS[3], ARGV[6]) == 1 then
  redis.call('HSET', KEYS[3], ARGV[6], ARGV[7] .. ' ' .. ARGV[8] .. ' ' .. ARGV[9])
end
return 1
"""
)

# KEYS: tpm, tpd of the reservation, holds zset, holds hash. ARGV: actual, reserved, hold id,
# key prefix. A held reservation settles against what the hold records (an extend may
# have moved it); one that already expired was refunded, so the actual usage is charged
# on its own. A window key that expired stays gone; none goes below 0.
_SETTLE = (
    _LIB
    + """
local actual = tonumber(ARGV[1])
local tpm, tpd, delta = KEYS[1], KEYS[2], actual - tonumber(ARGV[2])
if ARGV[3] ~= '' then
  local record = redis.call('HGET', KEYS[4], ARGV[3])
  if record then
    local tokens, minute, day = held(record)
    tpm, tpd, delta = ARGV[4] .. 'tpm:' .. minute, ARGV[4] .. 'tpd:' .. day, actual - tokens
    redis.call('HDEL', KEYS[4], ARGV[3])
    redis.call('ZREM', KEYS[3], ARGV[3])
  else
    delta = actual
  end
end
adjust(tpm, delta)
adjust(tpd, delta)
return 0
"""
)

# KEYS: holds zset, holds hash. ARGV: now, key prefix. Returns how many holds expired.
_EXPIRE = (
    _LIB + "return expire_holds(KEYS[1], KEYS[2], ARGV[2], ARGV[1], " + str(EXPIRE_BATCH) + ")"
)

_LIMIT_BITS = (
    (1, "requests_per_minute"),
    (2, "tokens_per_minute"),
    (4, "tokens_per_day"),
)


class RedisBudgetStore:
    """Reservations counted in Redis; thread-safe (redis-py's connection pool)."""

    blocking = True

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
        self._expire = self._client.register_script(_EXPIRE)
        self._tenants: set[str] = set()  # tenants this process held reservations for

    def key(self, tenant: str, kind: str, window: int) -> str:
        """The key of one counter; ``kind`` is ``rpm``, ``tpm`` or ``tpd``."""
        return f"{self._tenant_prefix(tenant)}{kind}:{window}"

    def _tenant_prefix(self, tenant: str) -> str:
        return f"{self._prefix}:{{{tenant}}}:"

    def _hold_keys(self, tenant: str) -> list[str]:
        prefix = self._tenant_prefix(tenant)
        return [f"{prefix}holds", f"{prefix}held"]

    def reserve(
        self,
        tenant: str,
        limits: Budgets,
        tokens: int,
        now: float | None = None,
        hold: Hold | None = None,
    ) -> Admission:
        """Admit and count one request of ``tokens`` if it fits every window."""
        check_tokens(tokens)
        now = time.time() if now is None else now
        minute, day = window_of(now)
        keys = [
            self.key(tenant, "rpm", minute),
            self.key(tenant, "tpm", minute),
            self.key(tenant, "tpd", day),
            *self._hold_keys(tenant),
        ]
        args: list[int | str | float] = [
            limits.requests_per_minute or 0,
            limits.tokens_per_minute or 0,
            limits.tokens_per_day or 0,
            tokens,
            MINUTE_TTL_S,
            DAY_TTL_S,
            now,
            self._tenant_prefix(tenant),
            hold.id if hold else "",
            now + hold.ttl_s if hold else 0,
            minute,
            day,
        ]
        refused = self._run(self._reserve, keys, args)
        if refused:
            return refusal([name for bit, name in _LIMIT_BITS if refused & bit], now)
        if hold is not None:
            self._tenants.add(tenant)
        return Admission(True, Reservation(tenant, tokens, minute, day, hold.id if hold else ""))

    def extend(
        self, reservation: Reservation, limits: Budgets, tokens: int, now: float | None = None
    ) -> Reservation | None:
        """Add ``tokens`` to a running reservation, or ``None`` when it does not fit."""
        check_tokens(tokens)
        now = time.time() if now is None else now
        minute, day = window_of(now)
        total = reservation.tokens + tokens
        keys = [
            self.key(reservation.tenant, "tpm", minute),
            self.key(reservation.tenant, "tpd", day),
            self._hold_keys(reservation.tenant)[1],
        ]
        args: list[int | str | float] = [
            limits.tokens_per_minute or 0,
            limits.tokens_per_day or 0,
            tokens,
            MINUTE_TTL_S,
            DAY_TTL_S,
            reservation.hold_id,
            total,
            minute,
            day,
        ]
        if not self._run(self._extend, keys, args):
            return None
        return Reservation(reservation.tenant, total, minute, day, reservation.hold_id)

    def _settle_call(
        self, reservation: Reservation, actual_tokens: int
    ) -> tuple[list[str], list[int | str | float]]:
        keys = [
            self.key(reservation.tenant, "tpm", reservation.minute),
            self.key(reservation.tenant, "tpd", reservation.day),
            *self._hold_keys(reservation.tenant),
        ]
        args: list[int | str | float] = [
            actual_tokens,
            reservation.tokens,
            reservation.hold_id,
            self._tenant_prefix(reservation.tenant),
        ]
        return keys, args

    def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        """Replace the reserved tokens by ``actual_tokens`` (see the module's rules)."""
        keys, args = self._settle_call(reservation, actual_tokens)
        self._run(self._settle, keys, args)

    def settle_many(self, settlements: Sequence[tuple[Reservation, int]]) -> None:
        """Every settle of one access-log batch in one pipeline: one round trip."""
        if not settlements:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for reservation, actual in settlements:
                keys, args = self._settle_call(reservation, actual)
                self._settle(keys=keys, args=args, client=pipe)
            pipe.execute()
        except (redis.RedisError, ConnectionError, TimeoutError) as exc:
            raise BudgetUnavailable(f"budget store {self._redacted()} failed: {exc}") from exc

    def expire(self, now: float | None = None) -> int:
        """Refund the expired holds of every tenant this process reserved for."""
        now = time.time() if now is None else now
        expired = 0
        for tenant in list(self._tenants):
            expired += self._run(
                self._expire, self._hold_keys(tenant), [now, self._tenant_prefix(tenant)]
            )
        return expired

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

    def _run(self, script: Script, keys: list[str], args: list[int | str | float]) -> int:
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
