"""The memory budget store: every reservation rule, driven by an injected clock."""

from __future__ import annotations

import heapq
import threading

import pytest

from smesh.config.schema import Budgets
from smesh.extproc import budget
from smesh.extproc.budget import Admission, Hold, MemoryBudgetStore, Reservation

DAY0 = 1_700_000_000 // 86_400 * 86_400  # a UTC midnight
T0 = DAY0 + 3_600.0  # 01:00:00 UTC: the start of a minute


class Clock:
    """A settable clock for the store."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryBudgetStore:
    return MemoryBudgetStore(clock=clock)


def admitted(admission: Admission) -> Reservation:
    assert admission.admitted, admission
    assert admission.reservation is not None
    return admission.reservation


def test_reserve_counts_one_request_and_its_tokens(store: MemoryBudgetStore) -> None:
    """An admitted reservation adds one request and its tokens to the minute and the day."""
    reservation = admitted(store.reserve("acme", Budgets(tokens_per_minute=1000), 120))
    assert reservation == Reservation("acme", 120, int(T0 // 60), int(T0 // 86_400))
    assert store.used("acme") == {
        "requests_per_minute": 1,
        "tokens_per_minute": 120,
        "tokens_per_day": 120,
    }


def test_requests_per_minute_refuses_at_the_limit(store: MemoryBudgetStore, clock: Clock) -> None:
    """The rpm limit admits exactly rpm requests, then refuses until the minute ends."""
    limits = Budgets(requests_per_minute=2)
    clock.now = T0 + 15.5
    admitted(store.reserve("acme", limits, 1))
    admitted(store.reserve("acme", limits, 1))
    refused = store.reserve("acme", limits, 1)
    assert refused == Admission(False, None, 44.5, "requests_per_minute")


def test_tokens_admitted_only_when_they_fit(store: MemoryBudgetStore) -> None:
    """A request is admitted only if used + its tokens stays within tpm: no overshoot."""
    limits = Budgets(tokens_per_minute=100)
    admitted(store.reserve("acme", limits, 99))
    refused = store.reserve("acme", limits, 500)
    assert (refused.admitted, refused.limit) == (False, "tokens_per_minute")
    admitted(store.reserve("acme", limits, 1))
    assert store.used("acme")["tokens_per_minute"] == 100


def test_refusal_adds_nothing(store: MemoryBudgetStore) -> None:
    """A refused request leaves every counter as it was."""
    limits = Budgets(tokens_per_minute=10)
    admitted(store.reserve("acme", limits, 10))
    before = store.used("acme")
    assert not store.reserve("acme", limits, 10).admitted
    assert store.used("acme") == before


def test_tokens_per_day_retry_after_is_until_utc_midnight(
    store: MemoryBudgetStore, clock: Clock
) -> None:
    """A spent daily budget refuses with retry_after counting down to the next UTC day."""
    limits = Budgets(tokens_per_day=50)
    admitted(store.reserve("acme", limits, 50))
    clock.now = T0 + 600.25
    refused = store.reserve("acme", limits, 1)
    assert refused.limit == "tokens_per_day"
    assert refused.retry_after == pytest.approx(DAY0 + 86_400 - clock.now)


def test_several_refusing_limits_report_the_one_that_resets_last(store: MemoryBudgetStore) -> None:
    """When the minute and the day are both spent, the refusal waits for the day."""
    limits = Budgets(requests_per_minute=1, tokens_per_minute=5, tokens_per_day=5)
    admitted(store.reserve("acme", limits, 5))
    refused = store.reserve("acme", limits, 1)
    assert refused.limit == "tokens_per_day"
    assert refused.retry_after == pytest.approx(DAY0 + 86_400 - T0)


def test_minute_rollover_resets_minute_windows_only(store: MemoryBudgetStore, clock: Clock) -> None:
    """The next minute admits again; the day keeps counting across minutes."""
    limits = Budgets(requests_per_minute=1, tokens_per_minute=10, tokens_per_day=1000)
    admitted(store.reserve("acme", limits, 10))
    clock.now = T0 + 59.999
    assert not store.reserve("acme", limits, 10).admitted
    clock.now = T0 + 60.0
    admitted(store.reserve("acme", limits, 10))
    assert store.used("acme") == {
        "requests_per_minute": 1,
        "tokens_per_minute": 10,
        "tokens_per_day": 20,
    }


def test_unlimited_budgets_never_refuse(store: MemoryBudgetStore) -> None:
    """With every limit None, reservations are counted but never refused."""
    for _ in range(100):
        admitted(store.reserve("acme", Budgets(), 1_000_000))
    assert store.used("acme")["requests_per_minute"] == 100


def test_tenants_are_counted_apart(store: MemoryBudgetStore) -> None:
    """One tenant spending its budget does not touch another's."""
    limits = Budgets(requests_per_minute=1)
    admitted(store.reserve("acme", limits, 1))
    admitted(store.reserve("globex", limits, 1))
    assert not store.reserve("acme", limits, 1).admitted


def test_settle_down_refunds_the_unused_reservation(store: MemoryBudgetStore) -> None:
    """Settling below the reservation gives the difference back to the budget."""
    limits = Budgets(tokens_per_minute=100)
    reservation = admitted(store.reserve("acme", limits, 100))
    assert not store.reserve("acme", limits, 1).admitted
    store.settle(reservation, 30)
    assert store.used("acme")["tokens_per_minute"] == 30
    admitted(store.reserve("acme", limits, 1))


def test_settle_up_charges_the_overrun(store: MemoryBudgetStore) -> None:
    """Settling above the reservation adds the overrun to both token windows."""
    reservation = admitted(store.reserve("acme", Budgets(), 100))
    store.settle(reservation, 250)
    assert store.used("acme")["tokens_per_minute"] == 250
    assert store.used("acme")["tokens_per_day"] == 250


def test_settle_never_goes_below_zero(store: MemoryBudgetStore) -> None:
    """A refund larger than the counter stops at 0."""
    reservation = admitted(store.reserve("acme", Budgets(), 10))
    store.settle(Reservation("acme", 500, reservation.minute, reservation.day), 0)
    assert store.used("acme")["tokens_per_minute"] == 0
    assert store.used("acme")["tokens_per_day"] == 0


def test_settle_applies_to_the_reservation_windows_not_the_current(
    store: MemoryBudgetStore, clock: Clock
) -> None:
    """A reservation from an earlier minute is settled in that minute and its day."""
    first = admitted(store.reserve("acme", Budgets(), 100))
    clock.now = T0 + 60
    admitted(store.reserve("acme", Budgets(), 40))  # current minute now holds 40
    store.settle(first, 10)
    assert store.used("acme")["tokens_per_minute"] == 40  # untouched
    assert store.used("acme")["tokens_per_day"] == 50  # 100 + 40 - 90


def test_settle_leaves_an_expired_window_dropped(store: MemoryBudgetStore, clock: Clock) -> None:
    """Once a window expired, settling into it does not bring it back."""
    old = admitted(store.reserve("acme", Budgets(), 100))
    clock.now = T0 + 120
    admitted(store.reserve("acme", Budgets(), 1))  # prunes the old minute
    store.settle(old, 500)
    assert ("acme", "tokens_per_minute", old.minute) not in store._counts
    assert store.used("acme")["tokens_per_day"] == 501


def test_extend_adds_tokens_without_counting_a_request(store: MemoryBudgetStore) -> None:
    """extend grows the reservation and the token windows, not the request count."""
    limits = Budgets(tokens_per_minute=1000)
    reservation = admitted(store.reserve("acme", limits, 100))
    extended = store.extend(reservation, limits, 50)
    assert extended == Reservation("acme", 150, reservation.minute, reservation.day)
    assert store.used("acme") == {
        "requests_per_minute": 1,
        "tokens_per_minute": 150,
        "tokens_per_day": 150,
    }


def test_extend_returns_none_when_a_token_budget_is_spent(store: MemoryBudgetStore) -> None:
    """extend past a spent tpm or tpd gives None and adds nothing."""
    for limits in (Budgets(tokens_per_minute=100), Budgets(tokens_per_day=100)):
        tenant = f"t{limits.tokens_per_minute}"
        reservation = admitted(store.reserve(tenant, limits, 100))
        assert store.extend(reservation, limits, 10) is None
        assert store.used(tenant)["tokens_per_minute"] == 100


def test_extend_ignores_the_request_limit(store: MemoryBudgetStore) -> None:
    """A spent rpm does not cut a stream that is already admitted."""
    limits = Budgets(requests_per_minute=1)
    reservation = admitted(store.reserve("acme", limits, 10))
    assert store.extend(reservation, limits, 10) is not None


def test_extend_moves_to_the_current_windows(store: MemoryBudgetStore, clock: Clock) -> None:
    """A stream extended in a later minute is counted, and later settled, there."""
    reservation = admitted(store.reserve("acme", Budgets(), 100))
    clock.now = T0 + 61
    extended = store.extend(reservation, Budgets(), 100)
    assert extended is not None
    assert (extended.tokens, extended.minute) == (200, reservation.minute + 1)
    store.settle(extended, 130)  # the 70 unused come back from the newest chunk
    assert store.used("acme")["tokens_per_minute"] == 30
    assert store.used("acme")["tokens_per_day"] == 130


def test_negative_tokens_are_rejected(store: MemoryBudgetStore) -> None:
    """A negative reservation is a caller bug, not a refund."""
    with pytest.raises(ValueError, match="tokens must be >= 0"):
        store.reserve("acme", Budgets(), -1)


def test_explicit_now_overrides_the_clock(store: MemoryBudgetStore) -> None:
    """A `now` argument picks the window instead of the injected clock."""
    reservation = admitted(store.reserve("acme", Budgets(), 1, now=T0 + 3_600))
    assert reservation.minute == int(T0 // 60) + 60


def test_threads_never_admit_past_the_limit(store: MemoryBudgetStore) -> None:
    """Concurrent reservations admit exactly rpm requests: check and add are one step."""
    limits = Budgets(requests_per_minute=500)
    results: list[bool] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(200):
            ok = store.reserve("acme", limits, 1).admitted
            with lock:
                results.append(ok)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 500
    assert store.used("acme")["requests_per_minute"] == 500


def test_settled_holds_do_not_pile_up_and_live_ones_still_expire(
    store: MemoryBudgetStore, clock: Clock
) -> None:
    """Memory stays bounded by the holds in flight, not by every request of the last
    ``ttl`` seconds; compaction never drops a live hold's deadline."""
    limits = Budgets(tokens_per_minute=10_000_000)
    live = admitted(store.reserve("acme", limits, 500, hold=Hold("live", 10.0)))
    for i in range(20_000):
        done = admitted(store.reserve("acme", limits, 10, hold=Hold(f"r{i}", 180.0)))
        store.settle(done, 1)
    # The store's deadline heap (private: what a long-running extproc's memory holds).
    assert len(store._deadlines) <= 1024 + 1
    assert store.used("acme")["tokens_per_minute"] == 500 + 20_000
    clock.now += 11.0  # the same minute: the live hold's refund is visible
    assert store.expire() == 1
    assert store.used("acme")["tokens_per_minute"] == 20_000
    store.settle(live, 7)  # late: charged on its own
    assert store.used("acme")["tokens_per_minute"] == 20_007


def test_repeated_hold_ids_never_make_reservations_quadratic(
    store: MemoryBudgetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A heap that cannot shrink (every hold still live under one repeated id) is not
    rebuilt on every request: 20,000 reservations rebuild it a handful of times."""
    rebuilds = []
    heapify = heapq.heapify

    def counting(heap: list[tuple[float, str]]) -> None:
        rebuilds.append(len(heap))
        heapify(heap)

    monkeypatch.setattr(budget.heapq, "heapify", counting)
    limits = Budgets(tokens_per_minute=10_000_000_000)
    for _ in range(20_000):
        admitted(store.reserve("acme", limits, 10, hold=Hold("same-id", 180.0)))
    assert len(rebuilds) <= 6  # doubling from 1,024: 1k, 2k, 4k, 8k, 16k
