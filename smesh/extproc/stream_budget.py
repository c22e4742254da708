"""Cut a stream that outruns its reservation: for tenants with ``budgets.enforce_in_stream``.

A reservation holds the prompt estimate plus ``max_tokens``, and the gateway always sends
``max_tokens`` upstream, so a server that honours it never outruns its reservation; the
settle from Envoy's access log then charges the exact usage. A tenant that does not want
to trust that opts in with ``enforce_in_stream: true``: its streams pass through extproc
(the response phases are switched on for them only), completion tokens are counted as
they pass (the model's tokenizer), and once the count passes the reservation more is
asked of the budget store in steps; refused, the stream ends with an SSE error event and
``[DONE]``. A store that cannot be reached also ends it (fail closed), saying so.
"""

from __future__ import annotations

from smesh.config.schema import Budgets
from smesh.extproc.budget import BudgetStore, BudgetUnavailable, Reservation
from smesh.extproc.metering import StreamMeter
from smesh.extproc.tokens import TokenCounter

__all__ = ["EXTEND_STEP", "StreamBudget"]

# Ask the store for at least this many tokens at a time: a round trip per step, not per token.
EXTEND_STEP = 64


class StreamBudget:
    """One stream of one ``enforce_in_stream`` tenant."""

    __slots__ = ("_budgets", "_limits", "_meter", "_prompt_tokens", "reservation")

    def __init__(
        self,
        budgets: BudgetStore,
        limits: Budgets,
        reservation: Reservation,
        prompt_tokens: int,
        counter: TokenCounter,
    ) -> None:
        self._budgets = budgets
        self._limits = limits
        self._prompt_tokens = prompt_tokens
        self._meter = StreamMeter(counter)
        self.reservation = reservation

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes:
        """The bytes to send instead of ``chunk`` (whole events; cut when over budget).

        Checked event by event: the event that would pass the budget is replaced by the
        closing events, and nothing is checked after the upstream's own ``[DONE]`` (a
        stream that ended whole is settled, not cut after the fact).
        """
        out: list[bytes] = []
        for event in self._meter.events(chunk, end_of_stream):
            self._meter.observe(event)
            if not self._meter.done and (cut := self._over_budget()) is not None:
                out.append(cut)
                break
            out.append(event)
        return b"".join(out)

    def _over_budget(self) -> bytes | None:
        used = self._prompt_tokens + self._meter.completion_tokens_seen
        if used <= self.reservation.tokens:
            return None
        extra = max(used - self.reservation.tokens, EXTEND_STEP)
        try:
            extended = self._budgets.extend(self.reservation, self._limits, extra)
        except BudgetUnavailable:
            return self._meter.cut(
                "the budget store is unreachable; the answer was cut",
                "budget_store_unavailable",
                type_="service_unavailable",
            )
        if extended is None:
            return self._meter.cut("the tenant's token budget is exhausted")
        self.reservation = extended
        return None
