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
        """The bytes to send instead of ``chunk`` (whole events; cut when over budget)."""
        out = self._meter.feed(chunk, end_of_stream)
        if self._meter.is_cut:
            return b""
        used = self._prompt_tokens + self._meter.completion_tokens_seen
        if used <= self.reservation.tokens:
            return out
        extra = max(used - self.reservation.tokens, EXTEND_STEP)
        try:
            extended = self._budgets.extend(self.reservation, self._limits, extra)
        except BudgetUnavailable:
            return out + self._meter.cut(
                "the budget store is unreachable; the answer was cut",
                "budget_store_unavailable",
                type_="service_unavailable",
            )
        if extended is None:
            return out + self._meter.cut("the tenant's token budget is exhausted")
        self.reservation = extended
        return out
