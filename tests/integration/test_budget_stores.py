"""The budget contract, one suite run against both stores (memory and a real Redis).

The stores must agree on every rule: a test here that one store passes and the other fails
is a bug in one of them. Redis-only failure modes (server gone, TTLs) follow at the end.
"""

from __future__ import annotations

import multiprocessing
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from smesh.config.schema import Budgets
from smesh.extproc.budget import BudgetUnavailable, Hold, MemoryBudgetStore, Reservation
from smesh.extproc.redis_budget import DAY_TTL_S, MINUTE_TTL_S, RedisBudgetStore
from tests.redis_server import RedisServer, redis_server_fixture, running_redis

pytestmark = pytest.mark.integration

redis_server = redis_server_fixture(scope="module")

DAY0 = int(time.time()) // 86_400 * 86_400  # today's UTC midnight: keys expire in real time
T0 = DAY0 + 60.0


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[MemoryBudgetStore | RedisBudgetStore]:
    """Each store, with a key prefix of its own so tests never share counters."""
    if request.param == "memory":
        yield MemoryBudgetStore(clock=lambda: T0)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis_store = RedisBudgetStore(server.url, key_prefix=f"test:{uuid.uuid4().hex}")
    yield redis_store
    redis_store.close()


def reserve_ok(store: MemoryBudgetStore | RedisBudgetStore, limits: Budgets, tokens: int) -> Any:
    admission = store.reserve("acme", limits, tokens, now=T0)
    assert admission.admitted, admission
    return admission.reservation


def test_rpm_admits_exactly_the_limit(store: MemoryBudgetStore | RedisBudgetStore) -> None:
    """rpm requests are admitted, the next one refused with the time left in the minute."""
    limits = Budgets(requests_per_minute=3)
    for _ in range(3):
        reserve_ok(store, limits, 1)
    refused = store.reserve("acme", limits, 1, now=T0 + 20.5)
    assert (refused.admitted, refused.limit, refused.retry_after) == (
        False,
        "requests_per_minute",
        39.5,
    )
    assert store.used("acme", T0)["requests_per_minute"] == 3


def test_a_reservation_must_fit_what_is_left_and_refusal_adds_nothing(
    store: MemoryBudgetStore | RedisBudgetStore,
) -> None:
    """used + tokens <= tpm admits, one token more is refused; a refusal changes nothing."""
    limits = Budgets(tokens_per_minute=100, tokens_per_day=10_000)
    reserve_ok(store, limits, 60)
    refused = store.reserve("acme", limits, 41, now=T0)
    assert (refused.admitted, refused.limit, refused.reservation) == (
        False,
        "tokens_per_minute",
        None,
    )
    reserve_ok(store, limits, 40)
    assert store.reserve("acme", limits, 1, now=T0).limit == "tokens_per_minute"
    assert store.used("acme", T0) == {
        "requests_per_minute": 2,
        "tokens_per_minute": 100,
        "tokens_per_day": 100,
    }


def test_a_huge_reservation_never_blocks_the_others(
    store: MemoryBudgetStore | RedisBudgetStore,
) -> None:
    """max_tokens = 2**63-1 against 2,000 tokens/min is refused and holds nothing back."""
    limits = Budgets(tokens_per_minute=2_000)
    assert not store.reserve("acme", limits, 2**63 - 1, now=T0).admitted
    reserve_ok(store, limits, 2_000)
    assert store.used("acme", T0)["tokens_per_minute"] == 2_000


def test_day_limit_and_minute_rollover(store: MemoryBudgetStore | RedisBudgetStore) -> None:
    """A new minute clears tpm but not tpd; a spent day waits for UTC midnight."""
    limits = Budgets(tokens_per_minute=50, tokens_per_day=80)
    reserve_ok(store, limits, 50)
    assert store.reserve("acme", limits, 1, now=T0).limit == "tokens_per_minute"
    assert store.reserve("acme", limits, 30, now=T0 + 60).admitted
    refused = store.reserve("acme", limits, 1, now=T0 + 120)
    assert refused.limit == "tokens_per_day"
    assert refused.retry_after == pytest.approx(DAY0 + 86_400 - (T0 + 120))


def test_unlimited_never_refuses(store: MemoryBudgetStore | RedisBudgetStore) -> None:
    """Budgets() counts but never refuses."""
    for _ in range(20):
        reserve_ok(store, Budgets(), 10**9)
    assert store.used("acme", T0)["tokens_per_day"] == 20 * 10**9


def test_settle_down_up_and_floor(store: MemoryBudgetStore | RedisBudgetStore) -> None:
    """settle refunds, charges overruns, and never takes a counter below 0."""
    limits = Budgets(tokens_per_minute=100)
    first = reserve_ok(store, limits, 100)
    store.settle(first, 40)
    assert store.used("acme", T0)["tokens_per_minute"] == 40
    second = reserve_ok(store, limits, 10)
    store.settle(second, 70)
    assert store.used("acme", T0)["tokens_per_minute"] == 110
    store.settle(Reservation("acme", 10_000, first.minute, first.day), 0)
    assert store.used("acme", T0) == {
        "requests_per_minute": 2,
        "tokens_per_minute": 0,
        "tokens_per_day": 0,
    }


def test_settle_targets_the_reservation_windows(
    store: MemoryBudgetStore | RedisBudgetStore,
) -> None:
    """Settling an earlier minute's reservation leaves the current minute alone."""
    first = reserve_ok(store, Budgets(), 100)
    assert store.reserve("acme", Budgets(), 5, now=T0 + 60).admitted
    store.settle(first, 0)
    assert store.used("acme", T0 + 60)["tokens_per_minute"] == 5
    assert store.used("acme", T0 + 60)["tokens_per_day"] == 5


def test_extend(store: MemoryBudgetStore | RedisBudgetStore) -> None:
    """extend adds tokens (no request) while they fit, then returns None and adds nothing."""
    limits = Budgets(requests_per_minute=1, tokens_per_minute=100)
    reservation = reserve_ok(store, limits, 60)
    assert store.extend(reservation, limits, 41, now=T0) is None
    extended = store.extend(reservation, limits, 40, now=T0)
    assert extended == Reservation("acme", 100, reservation.minute, reservation.day)
    assert store.extend(extended, limits, 1, now=T0) is None
    assert store.used("acme", T0) == {
        "requests_per_minute": 1,
        "tokens_per_minute": 100,
        "tokens_per_day": 100,
    }


def test_keys_carry_a_ttl_and_a_tenant_hash_tag(redis_server: RedisServer) -> None:
    """Minute keys live 120 s, day keys 2 days, all under the {tenant} hash tag."""
    store = RedisBudgetStore(redis_server.url, key_prefix="ttl")
    store.reserve("acme", Budgets(), 5)
    client = redis.Redis.from_url(redis_server.url)
    keys = sorted(key.decode() for key in client.scan_iter("ttl:*"))
    assert [key.split(":")[1:3] for key in keys] == [
        ["{acme}", kind] for kind in ("rpm", "tpd", "tpm")
    ]
    ttls = {key.split(":")[2]: client.ttl(key) for key in keys}
    assert MINUTE_TTL_S - 5 <= ttls["rpm"] <= MINUTE_TTL_S
    assert MINUTE_TTL_S - 5 <= ttls["tpm"] <= MINUTE_TTL_S
    assert DAY_TTL_S - 5 <= ttls["tpd"] <= DAY_TTL_S
    client.close()
    store.close()


def test_scripts_survive_a_script_flush(redis_server: RedisServer) -> None:
    """After Redis forgets the scripts (restart, SCRIPT FLUSH) they are loaded again."""
    store = RedisBudgetStore(redis_server.url, key_prefix=f"flush:{uuid.uuid4().hex}")
    assert store.reserve("acme", Budgets(), 1).admitted
    client = redis.Redis.from_url(redis_server.url)
    client.script_flush()
    client.close()
    assert store.reserve("acme", Budgets(), 1).admitted
    store.close()


def test_redis_down_raises_budget_unavailable() -> None:
    """A Redis that stops mid-way makes every operation raise BudgetUnavailable, quickly."""
    with running_redis() as server:
        store = RedisBudgetStore(server.url)
        reservation = store.reserve("acme", Budgets(), 10).reservation
        assert reservation is not None
        server.stop()
        started = time.monotonic()
        operations: list[Callable[[], object]] = [
            lambda: store.reserve("acme", Budgets(), 1),
            lambda: store.extend(reservation, Budgets(), 1),
            lambda: store.settle(reservation, 5),
            lambda: store.used("acme"),
        ]
        for operation in operations:
            with pytest.raises(BudgetUnavailable, match=r"budget store redis://127\.0\.0\.1"):
                operation()
        assert time.monotonic() - started < 5
        store.close()


def test_redis_hung_times_out_into_budget_unavailable() -> None:
    """A Redis that stops answering (SIGSTOP) fails within the socket timeout, unretried."""
    with running_redis() as server:
        store = RedisBudgetStore(server.url, socket_timeout=0.25)
        assert store.reserve("acme", Budgets(), 1).admitted
        server.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(BudgetUnavailable, match=r"[Tt]imeout"):
                store.reserve("acme", Budgets(), 1)
            assert time.monotonic() - started < 1.0
        finally:
            server.process.send_signal(signal.SIGCONT)
        store.close()


# --- two processes, three threads each, one Redis ---------------------------------------

LIMIT = 10_000  # tokens per window: spent within a slice, so every slice races at the limit
MAX_TOKENS = 100
SLICE_S = 0.2  # each slice of wall time is its own "minute" (now = T0 + 60 * slice)
RUN_S = 2.0


def _hammer(url: str, prefix: str, barrier: Any, out: Any, seed: int) -> None:
    """Reserve and settle (up) random requests from three threads; put records on `out`."""
    store = RedisBudgetStore(url, key_prefix=prefix, socket_timeout=2.0)
    limits = Budgets(tokens_per_minute=LIMIT)
    records: list[tuple[int, bool, int, int, str]] = []
    lock = threading.Lock()
    barrier.wait(30)
    start = time.time()

    def work(rng: random.Random) -> None:
        mine = []
        while (elapsed := time.time() - start) < RUN_S:
            window = int(elapsed / SLICE_S)
            tokens = rng.randint(1, MAX_TOKENS)
            admission = store.reserve("acme", limits, tokens, now=T0 + 60 * window)
            actual = 0
            if admission.reservation is not None:
                actual = tokens + rng.randint(0, 20)  # settling up keeps counters monotonic
                store.settle(admission.reservation, actual)
            mine.append((window, admission.admitted, tokens, actual, admission.limit))
        with lock:
            records.extend(mine)

    threads = [
        threading.Thread(target=work, args=(random.Random(seed * 10 + i),)) for i in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    out.put(records)


def test_two_processes_never_overspend(redis_server: RedisServer) -> None:
    """Across processes and threads: no lost updates, overshoot ≤ one request, no early 429."""
    ctx = multiprocessing.get_context("spawn")
    prefix = f"race:{uuid.uuid4().hex}"
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(redis_server.url, prefix, barrier, out, seed))
        for seed in (1, 2)
    ]
    for proc in procs:
        proc.start()
    records = [row for _ in procs for row in out.get(timeout=60)]
    for proc in procs:
        proc.join(10)
        assert proc.exitcode == 0
    store = RedisBudgetStore(redis_server.url, key_prefix=prefix)
    windows = sorted({row[0] for row in records})
    spent_windows = 0
    for window in windows:
        rows = [row for row in records if row[0] == window]
        admitted = [row for row in rows if row[1]]
        refused = [row for row in rows if not row[1]]
        used = store.used("acme", T0 + 60 * window)
        assert used["requests_per_minute"] == len(admitted)  # no lost or double counts
        assert used["tokens_per_minute"] == sum(row[3] for row in admitted)
        assert sum(row[2] for row in admitted) <= LIMIT - 1 + MAX_TOKENS
        assert {row[4] for row in refused} <= {"tokens_per_minute"}
        if refused:  # counters only grow here, so the limit was reached before the refusal
            spent_windows += 1
            assert used["tokens_per_minute"] >= LIMIT
    assert spent_windows >= 2, f"too few windows reached the limit: {len(records)} ops"
    assert store.used("acme", T0)["tokens_per_day"] == sum(row[3] for row in records if row[1])
    store.close()


def test_a_held_reservation_expires_and_is_refunded(
    store: MemoryBudgetStore | RedisBudgetStore,
) -> None:
    """A reservation whose settlement never arrives gives its tokens back at its deadline."""
    limits = Budgets(tokens_per_minute=100)
    assert store.reserve("acme", limits, 70, now=T0, hold=Hold("req-1", 5.0)).admitted
    assert not store.reserve("acme", limits, 40, now=T0 + 1).admitted
    # Past the deadline the next reservation finds the first one refunded.
    assert store.reserve("acme", limits, 40, now=T0 + 6).admitted
    assert store.used("acme", T0 + 6)["tokens_per_minute"] == 40


def test_settling_a_hold_in_time_uses_the_hold(store: MemoryBudgetStore | RedisBudgetStore) -> None:
    """Settled before its deadline, a hold is replaced by the usage and never expires later."""
    limits = Budgets(tokens_per_minute=100)
    admission = store.reserve("acme", limits, 70, now=T0, hold=Hold("req-2", 5.0))
    assert admission.reservation is not None
    store.settle(admission.reservation, 30)
    assert store.used("acme", T0)["tokens_per_minute"] == 30
    assert store.expire(now=T0 + 10) == 0
    assert store.used("acme", T0)["tokens_per_minute"] == 30


def test_a_settle_after_expiry_charges_the_usage_alone(
    store: MemoryBudgetStore | RedisBudgetStore,
) -> None:
    """A late access log after the refund charges what was used, not usage minus the hold."""
    limits = Budgets(tokens_per_minute=1000)
    admission = store.reserve("acme", limits, 70, now=T0, hold=Hold("req-3", 1.0))
    assert admission.reservation is not None
    assert store.expire(now=T0 + 2) == 1
    assert store.used("acme", T0)["tokens_per_minute"] == 0
    store.settle(admission.reservation, 25)
    assert store.used("acme", T0)["tokens_per_minute"] == 25


def test_settle_many_applies_each_settlement(store: MemoryBudgetStore | RedisBudgetStore) -> None:
    """One access-log batch settles many reservations at once, each against its own hold."""
    limits = Budgets(tokens_per_minute=10_000)
    held = []
    for i in range(20):
        admission = store.reserve("acme", limits, 100, now=T0, hold=Hold(f"batch-{i}", 60.0))
        assert admission.reservation is not None
        held.append(admission.reservation)
    assert store.used("acme", T0)["tokens_per_minute"] == 2_000
    store.settle_many([(reservation, 10) for reservation in held])
    assert store.used("acme", T0)["tokens_per_minute"] == 200
    assert store.expire(now=T0 + 120) == 0


def test_an_extended_hold_settles_in_its_new_window(
    store: MemoryBudgetStore | RedisBudgetStore,
) -> None:
    """A stream extended into the next minute settles there, against the grown hold.

    The first 100 tokens stay counted in the first minute; the 50 extra in the second,
    where the settle adds the last 10 (160 used - 150 held).
    """
    limits = Budgets(tokens_per_minute=1000)
    admission = store.reserve("acme", limits, 100, now=T0, hold=Hold("req-4", 300.0))
    assert admission.reservation is not None
    extended = store.extend(admission.reservation, limits, 50, now=T0 + 60)
    assert extended is not None
    store.settle(admission.reservation, 160)  # the caller's copy is stale: the hold wins
    assert store.used("acme", T0 + 60)["tokens_per_minute"] == 60
