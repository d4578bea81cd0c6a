"""Checkpoints through a real vigil: versions, conflicts, restarts, and vigil being away."""

from __future__ import annotations

import json
import os
import signal

from conftest import Vigil

NOTIFY = [{"kind": "notify", "max_age": "30s"}]


def test_save_and_load_round_trip_with_growing_versions(vigil: Vigil) -> None:
    vigil.write_config(
        {
            "bot": {
                "checks": NOTIFY,
                "script": """
cp = vigil_agent.Checkpoint()
emit("first_load", cp.load())
emit("v1", cp.save({"n": 1, "name": "snowman \\u2603"}))
emit("v2", cp.save({"n": 2, "name": "snowman \\u2603"}))
emit("loaded", {"state": cp.load(), "version": cp.version, "path": str(cp.path)})
while True:
    vigil_agent.heartbeat()
    time.sleep(0.2)
""",
            }
        }
    )
    vigil.start()
    assert vigil.result("bot", "first_load")["value"] is None
    assert vigil.result("bot", "v1")["value"] == 1
    assert vigil.result("bot", "v2")["value"] == 2
    loaded = vigil.result("bot", "loaded")["value"]
    assert loaded["state"] == {"n": 2, "name": "snowman \u2603"}
    assert loaded["version"] == 2

    # vigil has it, as `vigil checkpoint` and /status show.
    out = vigil.cli("checkpoint", "bot", "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["version"] == 2 and shown["document"] == {"n": 2, "name": "snowman \u2603"}
    assert vigil.status("bot")["checkpoint"]["version"] == 2

    # The local copy mirrors it, in the state dir.
    assert loaded["path"] == str(vigil.state_dir / "agent-checkpoints" / "bot.json")
    local = json.loads(open(loaded["path"]).read())
    assert local["version"] == 2 and not local["pending"]
    assert oct(os.stat(loaded["path"]).st_mode & 0o777) == "0o600"


def test_a_save_on_an_old_version_raises_checkpoint_conflict(vigil: Vigil) -> None:
    vigil.write_config(
        {
            "bot": {
                "checks": NOTIFY,
                "script": """
from vigil_agent import CheckpointConflict
cp = vigil_agent.Checkpoint()
emit("v1", cp.save({"mine": 1}))
wait_for_file("go")          # meanwhile another writer saves version 2
try:
    cp.save({"mine": 2})
    emit("no_conflict")
except CheckpointConflict as e:
    emit("conflict", {"current": e.current_version, "version": cp.version, "status": e.status,
                      "message": str(e), "is_vigil_error": isinstance(e, vigil_agent.VigilError)})
try:
    cp.save({"mine": 2})
    emit("no_second_conflict")
except CheckpointConflict as e:
    emit("second_conflict", {"current": e.current_version, "version": cp.version})
winner = cp.load()
emit("after", {"loaded": winner, "saved": cp.save(dict(winner, mine=2))})
while True:
    vigil_agent.heartbeat()
    time.sleep(0.2)
""",
            }
        }
    )
    vigil.start()
    assert vigil.result("bot", "v1")["value"] == 1
    # Another writer (here a person, through the API) saves on top of version 1.
    status, body = vigil.request(
        "PUT", "/agents/bot/checkpoint", {"theirs": 2}, headers={"If-Match": "1"}
    )
    assert (status, body["version"]) == (200, 2)
    vigil.go("bot", "go")

    conflict = vigil.result("bot", "conflict")["value"]
    assert conflict["current"] == 2 and conflict["version"] == 1, "vigil's version not adopted"
    assert conflict["status"] == 412 and conflict["is_vigil_error"]
    assert "load()" in conflict["message"]
    # Until the agent has read the other writer's version, its saves stay refused.
    assert vigil.result("bot", "second_conflict")["value"] == {"current": 2, "version": 1}
    after = vigil.result("bot", "after")["value"]
    assert after == {"loaded": {"theirs": 2}, "saved": 3}
    shown = json.loads(vigil.cli("checkpoint", "bot", "--json").stdout)
    assert shown["document"] == {"theirs": 2, "mine": 2}


def test_a_restarted_agent_resumes_from_its_last_checkpoint(vigil: Vigil) -> None:
    vigil.write_config(
        {
            "bot": {
                "checks": NOTIFY,
                "script": """
cp = vigil_agent.Checkpoint()
state = cp.load() or {"count": 0}
emit("loaded", state)
state["count"] += 1
emit("saved", {"version": cp.save(state), "count": state["count"]})
vigil_agent.ready()
while True:
    vigil_agent.heartbeat()
    time.sleep(0.2)
""",
            }
        }
    )
    vigil.start()
    assert vigil.result("bot", "saved")["value"] == {"version": 1, "count": 1}
    first = vigil.running_pid("bot")
    os.kill(first, signal.SIGKILL)

    second = vigil.running_pid("bot", not_pid=first)
    assert second != first
    assert vigil.result("bot", "loaded", nth=1)["value"] == {"count": 1}
    assert vigil.result("bot", "saved", nth=1)["value"] == {"version": 2, "count": 2}


def test_saves_while_vigil_is_down_are_kept_locally_and_synced_when_it_is_back(
    vigil: Vigil,
) -> None:
    vigil.write_config(
        {
            "bot": {
                "checks": [{"kind": "notify", "max_age": "60s"}],
                "script": """
cp = vigil_agent.Checkpoint()
emit("v1", cp.save({"n": 1}))
wait_for_file("vigil-killed")
t0 = time.monotonic()
emit("offline", {"save": cp.save({"n": 2}), "seconds": time.monotonic() - t0,
                 "load": cp.load(), "version": cp.version})
emit("offline_again", cp.save({"n": 3}))
wait_for_file("vigil-back")
emit("online", {"load": cp.load(), "version": cp.version})
emit("next", cp.save({"n": 4}))
while True:
    vigil_agent.heartbeat()
    time.sleep(0.2)
""",
            }
        }
    )
    vigil.start()
    assert vigil.result("bot", "v1")["value"] == 1
    pid = vigil.running_pid("bot")

    # vigil dies; the agent does not (agents outlive their supervisor by design).
    vigil.kill_vigil()
    vigil.go("bot", "vigil-killed")
    offline = vigil.result("bot", "offline")["value"]
    assert offline["save"] is None, "vigil away: saved locally, no version"
    assert offline["seconds"] < 3, "an unreachable vigil does not hold the bot up"
    assert offline["load"] == {"n": 2}, "load() falls back to the local copy"
    assert offline["version"] == 1
    assert vigil.result("bot", "offline_again")["value"] is None
    local = json.loads((vigil.state_dir / "agent-checkpoints" / "bot.json").read_text())
    assert local["pending"] and local["version"] == 1 and local["state"] == {"n": 3}

    # The next vigil adopts the running agent; its token works again; the pending copy goes up.
    vigil.start()
    assert vigil.running_pid("bot") == pid
    vigil.go("bot", "vigil-back")
    online = vigil.result("bot", "online")["value"]
    assert online == {"load": {"n": 3}, "version": 2}
    assert vigil.result("bot", "next")["value"] == 3

    history = json.loads(vigil.cli("checkpoint", "bot", "--history", "--json").stdout)
    assert [c["document"] for c in history["checkpoints"]] == [{"n": 4}, {"n": 3}, {"n": 1}]
    local = json.loads((vigil.state_dir / "agent-checkpoints" / "bot.json").read_text())
    assert not local["pending"] and local["version"] == 3
