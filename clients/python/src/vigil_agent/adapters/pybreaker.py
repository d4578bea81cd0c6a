"""pybreaker → vigil: an open circuit breaker declares the agent degraded.

An open breaker means the bot stopped calling a failing dependency on purpose; it makes no
progress until the breaker lets a trial call through, and a restart would gain nothing.
:class:`VigilListener` tells vigil so::

    import pybreaker
    from vigil_agent.adapters.pybreaker import VigilListener

    exchange = pybreaker.CircuitBreaker(
        fail_max=5, reset_timeout=30, name="binance", listeners=[VigilListener()]
    )

When the breaker opens, the agent is declared degraded until the breaker's
``reset_timeout`` is over (plus a margin); when it closes again, ok.

Needs pybreaker (``pip install 'vigil-agent[pybreaker]'``).
"""

from __future__ import annotations

from typing import Any, Optional

try:
    import pybreaker as _pybreaker
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "vigil_agent.adapters.pybreaker needs pybreaker: pip install 'vigil-agent[pybreaker]'"
    ) from e

from ..client import Client

__all__ = ["VigilListener"]

#: Seconds added to the breaker's ``reset_timeout`` for the declaration's ``until``: time for
#: the trial call to run.
DEFAULT_MARGIN = 5.0


class VigilListener(_pybreaker.CircuitBreakerListener):
    """A pybreaker listener declaring the agent degraded while a breaker is open.

    Args:
        reason_prefix: how the reason starts; it goes on with the breaker's name, e.g.
            ``"circuit breaker binance open"``.
        margin: seconds added to the breaker's ``reset_timeout`` for ``until``.
        client: the :class:`~vigil_agent.Client` to use (default: the module's).
    """

    def __init__(
        self,
        reason_prefix: str = "circuit breaker",
        *,
        margin: float = DEFAULT_MARGIN,
        client: Optional[Client] = None,
    ) -> None:
        super().__init__()
        self.reason_prefix = reason_prefix
        self.margin = margin
        self._client = client

    def _get_client(self) -> Client:
        if self._client is not None:
            return self._client
        from .. import default_client

        return default_client()

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        """Open: degraded until ``reset_timeout`` + margin from now. Closed: ok."""
        name = getattr(new_state, "name", new_state)
        if name == _pybreaker.STATE_OPEN:
            self._get_client().degraded(
                self.reason(cb), until=float(cb.reset_timeout) + self.margin
            )
        elif name == _pybreaker.STATE_CLOSED and old_state is not None:
            self._get_client().ok()

    def reason(self, cb: Any) -> str:
        """The reason declared when ``cb`` opens."""
        breaker = getattr(cb, "name", None)
        label = f"{self.reason_prefix} {breaker}" if breaker else self.reason_prefix
        return f"{label} open"
