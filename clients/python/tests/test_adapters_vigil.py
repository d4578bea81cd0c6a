"""The tenacity and pybreaker adapters against a real vigil (needs the libraries: skipped
without them — install with `pip install tenacity pybreaker`)."""

from __future__ import annotations

import pytest
from conftest import Vigil, wait_for

NOTIFY = [{"kind": "notify", "max_age": "30s"}]


def declarations(v: Vigil) -> list:
    return [r for r in v.audit("bot") if r["action"] in ("degraded", "degraded_ended")]


def wait_for_declarations(v: Vigil, actions: list) -> list:
    return wait_for(
        f"audit records {actions}",
        lambda: [r["action"] for r in declarations(v)] == actions and declarations(v),
    )


def test_tenacity_declares_degraded_while_retrying_and_ok_on_success(vigil: Vigil) -> None:
    pytest.importorskip("tenacity", reason="tenacity is not installed (pip install tenacity)")
    vigil.write_config(
        {
            "bot": {
                "checks": NOTIFY,
                "script": """
from tenacity import retry, wait_fixed, stop_after_attempt
from vigil_agent.adapters.tenacity import report

class RateLimitExceeded(Exception):
    pass

exchange = report("exchange", margin=3)
calls = []

@exchange.retry(wait=wait_fixed(1.5), stop=stop_after_attempt(5))
def fetch_ticker():
    calls.append(time.time())
    if len(calls) < 3:
        raise RateLimitExceeded("binance 429 Too Many Requests")
    return {"BTC_USDT": 97000}

started = time.time()
result = fetch_ticker()
emit("fetched", {"result": result, "calls": calls, "started": started})
while True:
    vigil_agent.heartbeat()
    time.sleep(0.2)
""",
            }
        }
    )
    vigil.start()
    fetched = vigil.result("bot", "fetched")["value"]
    assert fetched["result"] == {"BTC_USDT": 97000}
    assert len(fetched["calls"]) == 3
    records = wait_for_declarations(vigil, ["degraded", "degraded_ended"])
    degraded, ended = records
    assert degraded["metadata"]["declared"] == (
        "exchange: fetch_ticker failed (RateLimitExceeded: binance 429 Too Many Requests), retrying"
    )
    # until = the first failure + the 1.5 s wait + the 3 s margin (the second retry extended
    # it by the same reason: one record).
    until = degraded["metadata"]["until_ms"] / 1000
    assert fetched["calls"][0] + 4.0 < until < fetched["calls"][1] + 1.5 + 3.0 + 1.0
    assert "declared itself ok" in ended["reason"]


def test_tenacity_plain_before_sleep_callback(vigil: Vigil) -> None:
    pytest.importorskip("tenacity", reason="tenacity is not installed (pip install tenacity)")
    vigil.write_config(
        {
            "bot": {
                "checks": NOTIFY,
                "script": """
from tenacity import retry, wait_fixed, stop_after_attempt
from vigil_agent.adapters.tenacity import vigil_before_sleep

attempts = []

@retry(wait=wait_fixed(0.2), stop=stop_after_attempt(3), before_sleep=vigil_before_sleep)
def connect():
    attempts.append(1)
    if len(attempts) < 2:
        raise ConnectionError("feed socket closed")
    return "connected"

emit("result", connect())
while True:
    vigil_agent.heartbeat()
    time.sleep(0.2)
""",
            }
        }
    )
    vigil.start()
    assert vigil.result("bot", "result")["value"] == "connected"
    (degraded,) = wait_for_declarations(vigil, ["degraded"])
    assert (
        degraded["metadata"]["declared"]
        == "retrying: connect failed (ConnectionError: feed socket closed), retrying"
    )
    # Without the ok hook the declaration lapses by itself: the 0.2 s wait + the 5 s margin.
    records = wait_for_declarations(vigil, ["degraded", "degraded_ended"])
    assert "time it declared has passed" in records[1]["reason"]


def test_pybreaker_listener_declares_degraded_while_open_and_ok_when_closed(vigil: Vigil) -> None:
    pytest.importorskip("pybreaker", reason="pybreaker is not installed (pip install pybreaker)")
    vigil.write_config(
        {
            "bot": {
                "checks": NOTIFY,
                "script": """
import pybreaker
from vigil_agent.adapters.pybreaker import VigilListener

breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=1, name="binance",
                                   listeners=[VigilListener(margin=2)])
healthy = False

@breaker
def place_order():
    if not healthy:
        raise IOError("exchange down")
    return "filled"

for _ in range(2):
    try:
        place_order()
    except (IOError, pybreaker.CircuitBreakerError):
        pass
emit("open", {"state": breaker.current_state, "at": time.time()})
wait_for_file("heal")
healthy = True
time.sleep(1.1)        # reset_timeout: the next call is the trial
emit("closed", {"result": place_order(), "state": breaker.current_state})
while True:
    vigil_agent.heartbeat()
    time.sleep(0.2)
""",
            }
        }
    )
    vigil.start()
    opened = vigil.result("bot", "open")["value"]
    assert opened["state"] == "open"
    status = wait_for(
        "degraded in /status", lambda: vigil.status("bot").get("degraded") and vigil.status("bot")
    )
    assert status["degraded"]["reason"] == "circuit breaker binance open"
    (degraded,) = wait_for_declarations(vigil, ["degraded"])
    until = degraded["metadata"]["until_ms"] / 1000
    assert opened["at"] + 2.0 < until < opened["at"] + 1 + 2 + 0.5  # reset_timeout + margin

    vigil.go("bot", "heal")
    assert vigil.result("bot", "closed")["value"] == {"result": "filled", "state": "closed"}
    records = wait_for_declarations(vigil, ["degraded", "degraded_ended"])
    assert "declared itself ok" in records[1]["reason"]
    wait_for("degraded gone", lambda: "degraded" not in vigil.status("bot"))
