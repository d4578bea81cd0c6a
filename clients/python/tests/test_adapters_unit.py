"""The adapters' logic with a stand-in client (no vigil, and no retry library needed)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, List, Optional, Tuple

import pytest

from vigil_agent.adapters.tenacity import report


class FakeClient:
    def __init__(self) -> None:
        self.calls: List[Tuple[str, Optional[str], Any]] = []

    def degraded(self, reason: str, until: Any = None) -> None:
        self.calls.append(("degraded", reason, until))

    def ok(self) -> None:
        self.calls.append(("ok", None, None))


def retry_state(exc: Optional[BaseException], sleep: float, fn: Any = None) -> Any:
    outcome = SimpleNamespace(failed=exc is not None, exception=lambda: exc)
    return SimpleNamespace(
        fn=fn, outcome=outcome, next_action=SimpleNamespace(sleep=sleep), attempt_number=2
    )


def fetch_ticker() -> None:
    pass


def test_before_sleep_declares_until_the_end_of_the_wait() -> None:
    client = FakeClient()
    r = report("exchange", margin=2.0, client=client)  # type: ignore[arg-type]
    r(retry_state(RuntimeError("429 Too Many Requests\nbody: ..."), 8.0, fetch_ticker))
    r(retry_state(None, 1.0))
    assert client.calls == [
        (
            "degraded",
            "exchange: fetch_ticker failed (RuntimeError: 429 Too Many Requests), retrying",
            10.0,
        ),
        ("degraded", "exchange: call returned an unwanted result, retrying", 3.0),
    ]


def test_wrap_declares_ok_only_after_a_degraded_declaration() -> None:
    client = FakeClient()
    r = report(client=client)  # type: ignore[arg-type]
    wrapped = r.wrap(lambda: "x")
    assert wrapped() == "x" and client.calls == []
    r(retry_state(ValueError("no"), 1.0))
    assert wrapped() == "x"
    assert [c[0] for c in client.calls] == ["degraded", "ok"]

    async def coro() -> str:
        return "y"

    r(retry_state(ValueError("no"), 1.0))
    assert asyncio.run(r.wrap(coro)()) == "y"
    assert [c[0] for c in client.calls] == ["degraded", "ok", "degraded", "ok"]


def test_retry_builds_a_tenacity_decorator() -> None:
    tenacity = pytest.importorskip("tenacity", reason="tenacity is not installed")
    client = FakeClient()
    r = report("feed", margin=0.0, client=client)  # type: ignore[arg-type]
    theirs = []
    attempts = []

    @r.retry(
        wait=tenacity.wait_fixed(0.01),
        stop=tenacity.stop_after_attempt(3),
        before_sleep=theirs.append,
    )
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("reset")
        return "done"

    assert flaky() == "done"
    assert len(theirs) == 2
    assert [c[0] for c in client.calls] == ["degraded", "degraded", "ok"]
    assert (
        client.calls[0][1] == "feed: test_retry_builds_a_tenacity_decorator.<locals>.flaky failed "
        "(ConnectionError: reset), retrying"
    )


def test_pybreaker_listener_maps_states() -> None:
    pybreaker = pytest.importorskip("pybreaker", reason="pybreaker is not installed")
    from vigil_agent.adapters.pybreaker import VigilListener

    client = FakeClient()
    listener = VigilListener(margin=1.0, client=client)  # type: ignore[arg-type]
    assert isinstance(listener, pybreaker.CircuitBreakerListener)
    cb = pybreaker.CircuitBreaker(
        fail_max=1, reset_timeout=30, name="binance", listeners=[listener]
    )
    with pytest.raises((ZeroDivisionError, pybreaker.CircuitBreakerError)):
        cb.call(lambda: 1 / 0)
    assert client.calls == [("degraded", "circuit breaker binance open", 31.0)]
    cb.close()
    assert client.calls[-1] == ("ok", None, None)
