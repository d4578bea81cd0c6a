"""degraded()/ok(), heartbeats and status text through a real vigil: notify socket and HTTP."""

from __future__ import annotations

import time

import pytest
from conftest import Vigil, wait_for

AGENT = """
vigil_agent.ready()
vigil_agent.status("warming up")
vigil_agent.heartbeat()
emit("up", {"notify": os.environ.get("NOTIFY_SOCKET"), "url": os.environ.get("VIGIL_URL")})
wait_for_file("degrade")
until = time.time() + 120
for _ in range(50):          # a retry loop calling it often: sent once
    vigil_agent.degraded("binance 429, breaker open", until=120)
emit("degraded", until)
wait_for_file("ok")
for _ in range(50):
    vigil_agent.ok()
emit("ok")
while True:
    vigil_agent.heartbeat()
    time.sleep(0.1)
"""

CHECKS = {
    "notify": [{"kind": "notify", "max_age": "30s"}],
    "api": [{"kind": "api", "max_age": "30s"}],
}


def declarations(v: Vigil) -> list:
    return [r for r in v.audit("bot") if r["action"] in ("degraded", "degraded_ended")]


@pytest.mark.parametrize("channel", ["notify", "api"])
def test_degraded_and_ok_show_in_status_and_the_journal(vigil: Vigil, channel: str) -> None:
    vigil.write_config({"bot": {"checks": CHECKS[channel], "script": AGENT}})
    vigil.start()
    up = vigil.result("bot", "up")["value"]
    assert (up["notify"] is not None) == (channel == "notify")
    assert up["url"] == vigil.url

    vigil.go("bot", "degrade")
    until = vigil.result("bot", "degraded")["value"]
    status = wait_for(
        "degraded in /status", lambda: vigil.status("bot").get("degraded") and vigil.status("bot")
    )
    assert status["degraded"]["reason"] == "binance 429, breaker open"
    suspended = status["degraded"]["stall_checks_suspended_until"]
    assert suspended is not None
    from vigil_agent._timeutil import parse_rfc3339

    assert abs(parse_rfc3339(suspended) - until) < 2.0, (suspended, until)
    records = wait_for("the degraded record", lambda: declarations(vigil))
    assert [r["action"] for r in records] == ["degraded"]
    assert records[0]["metadata"]["declared"] == "binance 429, breaker open"

    vigil.go("bot", "ok")
    vigil.result("bot", "ok")
    wait_for("degraded gone from /status", lambda: "degraded" not in vigil.status("bot"))
    records = wait_for(
        "the degraded_ended record",
        lambda: (
            [r for r in declarations(vigil) if r["action"] == "degraded_ended"]
            and declarations(vigil)
        ),
    )
    assert [r["action"] for r in records] == ["degraded", "degraded_ended"]
    assert "declared itself ok" in records[1]["reason"]
    assert vigil.status("bot")["checks"][0]["verdict"] == "ok"
    if channel == "notify":
        assert vigil.status("bot")["status_text"] == "warming up"


def test_http_heartbeats_keep_an_api_check_alive(vigil: Vigil) -> None:
    vigil.write_config(
        {
            "bot": {
                "checks": [{"kind": "api", "max_age": "3s"}],
                "script": """
deadline = time.monotonic() + 6
while time.monotonic() < deadline:
    vigil_agent.heartbeat()
    time.sleep(0.05)
emit("beat for 6s")
while True:
    time.sleep(1)    # silent: the api check must notice
""",
            }
        }
    )
    vigil.start()
    pid = vigil.running_pid("bot")
    vigil.result("bot", "beat for 6s", timeout=15)
    # 6 s of heartbeats (throttled to one a second) against a 3 s max_age: never stalled.
    assert vigil.status("bot").get("pid") == pid
    assert not [r for r in vigil.audit("bot") if r["action"] == "stalled"]
    # Then silence: vigil sees the stall (so the heartbeats really were what kept it alive).
    wait_for(
        "a stall once heartbeats stop",
        lambda: [r for r in vigil.audit("bot") if r["action"] == "stalled"],
        timeout=20,
    )


SILENT_WHILE_DEGRADED = """
vigil_agent.ready()
vigil_agent.heartbeat()
vigil_agent.degraded("exchange 429, breaker open", until=60)
emit("degraded")
wait_for_file("ok")          # silent meanwhile, far beyond max_age: on purpose
emit("ok", os.getpid())
vigil_agent.ok()             # back: no heartbeat before it, as when an adapter declares it
time.sleep(0.5)              # (the next unit of work takes a moment)
while True:
    vigil_agent.heartbeat()
    time.sleep(0.1)
"""


@pytest.mark.parametrize("channel", ["notify", "api"])
def test_ok_after_a_long_silent_degradation_does_not_stall_the_agent(
    vigil: Vigil, channel: str
) -> None:
    # The adapters call ok() the moment a call succeeds, before the bot can send a heartbeat;
    # vigil acts on a check still failing when the agent declares ok. ok() must carry a sign
    # of life, or every degradation longer than max_age ends in a restart.
    check = {"kind": channel, "max_age": "2s"}
    vigil.write_config({"bot": {"checks": [check], "script": SILENT_WHILE_DEGRADED}})
    vigil.start()
    pid = vigil.running_pid("bot")
    vigil.result("bot", "degraded")
    wait_for(
        "the stall not acted on (the check did fail during the silence)",
        lambda: [r for r in declarations(vigil) if r["metadata"].get("suspended_stall")],
        timeout=15,
    )
    vigil.go("bot", "ok")
    assert vigil.result("bot", "ok")["value"] == pid
    wait_for(
        "degraded_ended (declared ok)",
        lambda: [r for r in declarations(vigil) if r["action"] == "degraded_ended"],
    )
    wait_for("the check ok again", lambda: vigil.status("bot")["checks"][0]["verdict"] == "ok")
    time.sleep(1.0)  # the heartbeats go on: nothing else may follow
    actions = [r["action"] for r in vigil.audit("bot")]
    assert "stalled" not in actions and "restart" not in actions, actions
    assert vigil.status("bot")["pid"] == pid
