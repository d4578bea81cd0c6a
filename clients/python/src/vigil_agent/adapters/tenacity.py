"""tenacity → vigil: a retry that waits declares the agent degraded for as long as it waits.

While a call is being retried (an exchange answering 429, a feed reconnecting), the bot
makes no progress on purpose, and restarting it would only lose its place. With this
adapter each wait tells vigil so, until the end of the wait plus a margin, and the call's
eventual success tells vigil the agent is fine again.

One line, in the ``@retry`` you already have::

    from tenacity import retry, wait_exponential
    from vigil_agent.adapters.tenacity import vigil_before_sleep

    @retry(wait=wait_exponential(max=60), before_sleep=vigil_before_sleep)
    def fetch_ticker(): ...

That declares ``degraded`` before every wait; the declaration lapses by itself a few
seconds after the last wait. To also declare ``ok`` the moment a call succeeds, and to name
the dependency in the reason, make a reporter and let it build the decorator::

    from vigil_agent.adapters.tenacity import report

    exchange = report("exchange")

    @exchange.retry(wait=wait_exponential(max=60), stop=stop_after_delay(600))
    def fetch_ticker(): ...

(equivalently: ``@exchange.wrap`` above ``@retry(..., before_sleep=exchange)``).

tenacity is imported only by :meth:`TenacityReporter.retry`; the rest works with any
object shaped like tenacity's ``RetryCallState``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional, TypeVar, cast

from ..client import Client

__all__ = ["TenacityReporter", "report", "vigil_before_sleep"]

F = TypeVar("F", bound=Callable[..., Any])

#: Seconds added to each wait: the declaration outlives the wait by this much, so the next
#: attempt has time to run before stall checks apply again.
DEFAULT_MARGIN = 5.0


class TenacityReporter:
    """Declares the agent degraded while tenacity waits to retry, and ok when a call succeeds.

    Use the reporter itself as tenacity's ``before_sleep`` callback.

    Args:
        reason_prefix: names what is failing, e.g. ``"exchange"``; the reason vigil shows is
            ``"<prefix>: <function> failed (<exception>), retrying"``.
        margin: seconds added to each wait for the declaration's ``until``.
        client: the :class:`~vigil_agent.Client` to use (default: the module's).
    """

    def __init__(
        self,
        reason_prefix: str = "retrying",
        *,
        margin: float = DEFAULT_MARGIN,
        client: Optional[Client] = None,
    ) -> None:
        self.reason_prefix = reason_prefix
        self.margin = margin
        self._client = client
        self._declared = False

    def _get_client(self) -> Client:
        if self._client is not None:
            return self._client
        from .. import default_client

        return default_client()

    def __call__(self, retry_state: Any) -> None:
        """tenacity's ``before_sleep``: degraded until the end of the coming wait + margin."""
        sleep = _upcoming_sleep(retry_state)
        self._get_client().degraded(self.reason(retry_state), until=sleep + self.margin)
        self._declared = True

    def reason(self, retry_state: Any) -> str:
        """The reason declared for this retry (stable across attempts of one failure, so the
        journal records it once)."""
        name = _function_name(retry_state)
        outcome = getattr(retry_state, "outcome", None)
        failure = None
        if outcome is not None and getattr(outcome, "failed", False):
            exc = outcome.exception()
            text = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else ""
            failure = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        what = f"{name} failed ({failure})" if failure else f"{name} returned an unwanted result"
        return f"{self.reason_prefix}: {what}, retrying"

    def succeeded(self) -> None:
        """A call went through: declare ok if this reporter declared degraded."""
        if self._declared:
            self._declared = False
            self._get_client().ok()

    def wrap(self, fn: F) -> F:
        """Decorate a (retried) function: when it returns, declare ok (see :meth:`succeeded`).
        Works for ``async def`` functions too."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                result = await fn(*args, **kwargs)
                self.succeeded()
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            self.succeeded()
            return result

        return wrapper  # type: ignore[return-value]

    def retry(self, **kwargs: Any) -> Callable[[F], F]:
        """``tenacity.retry(**kwargs)`` with this reporter as ``before_sleep`` (after any
        ``before_sleep`` you pass), and ok declared when the call succeeds."""
        import tenacity

        theirs = kwargs.pop("before_sleep", None)

        def before_sleep(retry_state: Any) -> None:
            if theirs is not None:
                theirs(retry_state)
            self(retry_state)

        decorator = tenacity.retry(before_sleep=before_sleep, **kwargs)

        def apply(fn: F) -> F:
            return self.wrap(cast(F, decorator(fn)))

        return apply


def report(
    reason_prefix: str = "retrying",
    *,
    margin: float = DEFAULT_MARGIN,
    client: Optional[Client] = None,
) -> TenacityReporter:
    """A :class:`TenacityReporter` for one dependency (``reason_prefix`` names it)."""
    return TenacityReporter(reason_prefix, margin=margin, client=client)


#: A ready-made ``before_sleep`` callback: ``@retry(..., before_sleep=vigil_before_sleep)``.
vigil_before_sleep = report()


def _upcoming_sleep(retry_state: Any) -> float:
    action = getattr(retry_state, "next_action", None)
    sleep: Any = getattr(action, "sleep", None)
    if sleep is None:
        sleep = getattr(retry_state, "upcoming_sleep", 0.0)
    try:
        return max(0.0, float(sleep))
    except (TypeError, ValueError):
        return 0.0


def _function_name(retry_state: Any) -> str:
    fn = getattr(retry_state, "fn", None)
    if fn is not None:
        return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "call"))
    return "call"
