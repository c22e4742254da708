"""Per-tenant budgets as reservations (DESIGN decision 8): the protocol and the memory store.

A request reserves tokens (prompt estimate + ``max_tokens`` cap) before it goes upstream
and settles to the real usage afterwards, so concurrent requests cannot all pass a check
that only one of them fits in. The rules, shared by every store:

- **Fixed windows.** Requests and tokens are counted per minute (``int(now // 60)``) and
  tokens per UTC day (``int(now // 86400)``). A limit set to ``None`` is unlimited.
- **reserve** admits iff the request fits every configured limit: ``requests + 1 <= rpm``,
  ``used + tokens <= tpm`` and ``used + tokens <= tpd`` in the current windows.
  Atomically with that check it adds one request and ``tokens`` to the windows. So
  reservations never take a window past its limit, and only a stream that runs past
  its own reservation (see ``extend``) can. A refusal adds nothing; it names the
  refusing limit and ``retry_after``, the seconds until that window ends (when several
  refuse, the one that resets last, because the request cannot pass before it does).
  A reservation larger than a whole limit can never fit: callers check
  :func:`exceeds_limits` first and answer 400 rather than a 429 that no wait would cure.
- **settle** replaces a reservation by the real usage: it adds ``actual - reserved``
  (possibly negative) to the token windows the reservation was counted in (its minute
  and day, not the current ones), never below 0. A window that has already expired is
  left alone. Calling it once per reservation is the caller's job.
- **extend** is for a stream that runs past its reservation: the token rule of
  ``reserve`` (``used + tokens <= limit``) against the *current* windows (no request
  counted). It returns a
  reservation holding the old tokens plus the new ones, moved to the current windows,
  or ``None`` when over budget (the caller then cuts the stream). Moving is exact for
  the settle that follows: a stream extends only once its usage passed the old
  reservation, so any refund is at most the newest chunk, which sits in those windows.

- **Held reservations expire.** Settlement arrives with Envoy's access log, after the
  answer; if it never does (Envoy died, the log was dropped), the reservation must not
  hold budget forever. A reservation made with a ``hold`` (the request id and how long
  the request may take) is refunded by the store once its deadline passes; a settle
  that arrives later charges the real usage on its own. Expiry runs inside ``reserve``
  for the tenant that reserves and in :meth:`BudgetStore.expire` for everyone.

Counters are kept for every window even when its limit is unlimited, so a limit added
by a config change applies to traffic already in flight.

Errors: :class:`BudgetUnavailable` means the store cannot be reached; callers fail
closed (HTTP 503) rather than serve an unmetered request.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from smesh.config.schema import Budgets

__all__ = [
    "DAY_S",
    "MINUTE_S",
    "Admission",
    "BudgetStore",
    "BudgetUnavailable",
    "Hold",
    "MemoryBudgetStore",
    "Reservation",
    "exceeds_limits",
    "reservation_from_text",
    "reservation_text",
    "retry_after",
    "window_of",
]

MINUTE_S = 60
DAY_S = 86_400

# Counter kinds: the window each one lives in and the limit that bounds it.
_RPM, _TPM, _TPD = "requests_per_minute", "tokens_per_minute", "tokens_per_day"


# The per-request values below are NamedTuples, not frozen dataclasses: equally immutable,
# and built in ~0.3 µs where a frozen dataclass's __init__ costs ~0.2 µs per field
# (measured; a request builds several of them, and an access-log entry several more).


class Reservation(NamedTuple):
    """Tokens held for one request, and the windows they were counted in."""

    tenant: str
    tokens: int
    minute: int
    day: int
    hold_id: str = ""  # set when the store expires it unless settled (see Hold)


def reservation_text(reservation: Reservation) -> str:
    """The reservation as it travels in request metadata: ``"tokens minute day hold_id"``.

    One string is one protobuf ``Value`` to build and read back, where a list of four cost
    extproc ~20k more CPU instructions per request and ~10k more per access-log entry
    (bench.extproc_instructions).
    The tenant travels beside it.
    """
    r = reservation
    return f"{r.tokens} {r.minute} {r.day} {r.hold_id}"


def reservation_from_text(tenant: str, text: str) -> Reservation | None:
    """:func:`reservation_text` read back; ``None`` for anything else."""
    parts = text.split(" ", 3)
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts[:3]):
        return None
    return Reservation(tenant, int(parts[0]), int(parts[1]), int(parts[2]), parts[3])


class Hold(NamedTuple):
    """Ask the store to refund a reservation left unsettled for ``ttl_s`` seconds."""

    id: str
    ttl_s: float


class Admission(NamedTuple):
    """The answer to :meth:`BudgetStore.reserve`."""

    admitted: bool
    reservation: Reservation | None
    retry_after: float = 0.0
    limit: str = ""


class BudgetUnavailable(Exception):
    """The store cannot be reached: callers fail closed (HTTP 503)."""


class BudgetStore(Protocol):
    """Where reservations are counted; one per extproc process, shared by its threads."""

    blocking: bool  # calls wait on the network (keep them off an event loop)

    def reserve(
        self,
        tenant: str,
        limits: Budgets,
        tokens: int,
        now: float | None = None,
        hold: Hold | None = None,
    ) -> Admission: ...

    def extend(
        self, reservation: Reservation, limits: Budgets, tokens: int, now: float | None = None
    ) -> Reservation | None: ...

    def settle(self, reservation: Reservation, actual_tokens: int) -> None: ...

    def settle_many(self, settlements: Sequence[tuple[Reservation, int]]) -> None: ...

    def expire(self, now: float | None = None) -> int: ...

    def close(self) -> None: ...


def window_of(now: float) -> tuple[int, int]:
    """The (minute, UTC day) windows ``now`` falls in."""
    return int(now // MINUTE_S), int(now // DAY_S)


def exceeds_limits(limits: Budgets, tokens: int) -> str | None:
    """The token limit a reservation of ``tokens`` is larger than on its own, if any."""
    for name in (_TPM, _TPD):
        limit: int | None = getattr(limits, name)
        if limit is not None and tokens > limit:
            return name
    return None


def retry_after(limit: str, now: float) -> float:
    """Seconds from ``now`` until the window of ``limit`` ends."""
    size = DAY_S if limit == _TPD else MINUTE_S
    return (math.floor(now / size) + 1) * size - now


def refusal(refused: list[str], now: float) -> Admission:
    """The refusal for the limits in ``refused``: the one that resets last wins."""
    limit = max(refused, key=lambda name: retry_after(name, now))
    return Admission(False, None, retry_after(limit, now), limit)


def check_tokens(tokens: int) -> None:
    """Reject a negative reservation: it would silently refund another request's tokens."""
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")


# The deadline heap is rebuilt no smaller than this (see MemoryBudgetStore._compact).
COMPACT_MIN = 1024


class MemoryBudgetStore:
    """Counters in a dict under one lock: exact for a single extproc process.

    Keys are ``(tenant, kind, window)``; windows older than the current one are dropped
    lazily, at most once per minute, so memory stays bounded by the active tenants.
    """

    blocking = False

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], int] = {}
        self._pruned_minute = -1
        self._holds: dict[str, Reservation] = {}  # hold id -> what it holds now
        self._deadlines: list[tuple[float, str]] = []  # heap of (deadline, hold id)
        self._compact_at = COMPACT_MIN  # heap size that triggers the next rebuild

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
        now = self._clock() if now is None else now
        minute, day = window_of(now)
        keys = {_RPM: (tenant, _RPM, minute), _TPM: (tenant, _TPM, minute)}
        keys[_TPD] = (tenant, _TPD, day)
        with self._lock:
            self._expire(now)
            self._prune(minute, day)
            refused = self._refused(keys, limits, {_RPM: 1, _TPM: tokens, _TPD: tokens})
            if refused:
                return refusal(refused, now)
            self._add(keys[_RPM], 1)
            self._add(keys[_TPM], tokens)
            self._add(keys[_TPD], tokens)
            reservation = Reservation(tenant, tokens, minute, day, hold.id if hold else "")
            if hold is not None:
                self._holds[hold.id] = reservation
                heapq.heappush(self._deadlines, (now + hold.ttl_s, hold.id))
                self._compact()
        return Admission(True, reservation)

    def _compact(self) -> None:
        """Drop the deadlines of settled holds once they outnumber the live ones.

        A settle leaves its deadline in the heap (removing it would be O(n)); without
        this the heap would hold every request of the last ``ttl`` seconds (~270,000
        entries at 1,500 req/s and the default 120 s model timeout). The next rebuild
        waits until the heap has doubled, so the cost stays O(1) per request, amortised,
        even when nothing can be dropped (many live holds, or hold ids that repeat).
        """
        if len(self._deadlines) <= self._compact_at:
            return
        live = self._holds
        self._deadlines = [entry for entry in self._deadlines if entry[1] in live]
        heapq.heapify(self._deadlines)
        self._compact_at = max(COMPACT_MIN, 4 * len(live), 2 * len(self._deadlines))

    def expire(self, now: float | None = None) -> int:
        """Refund every held reservation past its deadline; how many were."""
        with self._lock:
            return self._expire(self._clock() if now is None else now)

    def _expire(self, now: float) -> int:
        expired = 0
        while self._deadlines and self._deadlines[0][0] <= now:
            _, hold_id = heapq.heappop(self._deadlines)
            held = self._holds.pop(hold_id, None)
            if held is not None:  # else settled already
                self._apply(held, -held.tokens)
                expired += 1
        return expired

    def extend(
        self, reservation: Reservation, limits: Budgets, tokens: int, now: float | None = None
    ) -> Reservation | None:
        """Add ``tokens`` to a running reservation, or ``None`` when a token budget is spent."""
        check_tokens(tokens)
        now = self._clock() if now is None else now
        minute, day = window_of(now)
        tenant = reservation.tenant
        keys = {_TPM: (tenant, _TPM, minute), _TPD: (tenant, _TPD, day)}
        with self._lock:
            self._prune(minute, day)
            if self._refused(keys, limits, {_TPM: tokens, _TPD: tokens}):
                return None
            self._add(keys[_TPM], tokens)
            self._add(keys[_TPD], tokens)
            extended = reservation._replace(
                tokens=reservation.tokens + tokens, minute=minute, day=day
            )
            if reservation.hold_id in self._holds:
                self._holds[reservation.hold_id] = extended
        return extended

    def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        """Replace the reserved tokens by ``actual_tokens`` in the reservation's windows.

        A held reservation that already expired was refunded: ``actual_tokens`` is then
        charged on its own.
        """
        with self._lock:
            self._settle(reservation, actual_tokens)

    def settle_many(self, settlements: Sequence[tuple[Reservation, int]]) -> None:
        """Several settles under one lock (one access-log batch)."""
        with self._lock:
            for reservation, actual in settlements:
                self._settle(reservation, actual)

    def _settle(self, reservation: Reservation, actual_tokens: int) -> None:
        if reservation.hold_id:
            held = self._holds.pop(reservation.hold_id, None)
            if held is None:  # expired and refunded (or settled twice): charge what was used
                self._apply(reservation, actual_tokens)
                return
            reservation = held  # an extend may have moved it since the caller saw it
        self._apply(reservation, actual_tokens - reservation.tokens)

    def _apply(self, reservation: Reservation, delta: int) -> None:
        tenant = reservation.tenant
        for key in ((tenant, _TPM, reservation.minute), (tenant, _TPD, reservation.day)):
            if key in self._counts:  # an expired window is history: leave it dropped
                self._counts[key] = max(0, self._counts[key] + delta)

    def used(self, tenant: str, now: float | None = None) -> dict[str, int]:
        """Current-window usage per limit name (for tests, metrics and status pages)."""
        now = self._clock() if now is None else now
        minute, day = window_of(now)
        with self._lock:
            return {
                _RPM: self._counts.get((tenant, _RPM, minute), 0),
                _TPM: self._counts.get((tenant, _TPM, minute), 0),
                _TPD: self._counts.get((tenant, _TPD, day), 0),
            }

    def close(self) -> None:
        """Nothing to release; present for the protocol."""

    def _refused(
        self, keys: dict[str, tuple[str, str, int]], limits: Budgets, adding: dict[str, int]
    ) -> list[str]:
        refused = []
        for name, key in keys.items():
            limit: int | None = getattr(limits, name)
            if limit is not None and self._counts.get(key, 0) + adding[name] > limit:
                refused.append(name)
        return refused

    def _add(self, key: tuple[str, str, int], amount: int) -> None:
        self._counts[key] = self._counts.get(key, 0) + amount

    def _prune(self, minute: int, day: int) -> None:
        if minute == self._pruned_minute:
            return
        self._pruned_minute = minute
        for key in list(self._counts):
            _, kind, window = key
            if window < (day if kind == _TPD else minute):
                del self._counts[key]
