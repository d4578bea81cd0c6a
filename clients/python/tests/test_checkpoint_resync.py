"""Re-syncing a checkpoint saved while vigil was unreachable, when another writer moved on.

These drive the client from the test process against a real vigil: with no `[api] token`
configured, a request with a token that is not an agent's (``vat_…``) acts as a person, who
may write any agent's checkpoint. "vigil unreachable" is a client pointed at a closed port,
sharing the local directory with the one that reaches vigil.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import Vigil, free_port

from vigil_agent import Checkpoint, CheckpointConflict, Client

PERSON = "person-token-for-tests"


@pytest.fixture
def idle_vigil(vigil: Vigil) -> Vigil:
    vigil.write_config({"bot": {"script": "while True:\n    time.sleep(1)\n"}})
    vigil.start()
    vigil.running_pid("bot")
    return vigil


def clients(v: Vigil) -> "tuple[Client, Client]":
    up = Client(url=v.url, agent="bot", token=PERSON)
    down = Client(url=f"http://127.0.0.1:{free_port()}", agent="bot", token=PERSON)
    return up, down


def person_put(v: Vigil, document: object, if_match: int) -> int:
    time.sleep(0.01)  # distinct milliseconds from the client's own times
    status, body = v.request(
        "PUT", "/agents/bot/checkpoint", document, headers={"If-Match": str(if_match)}
    )
    assert status in (200, 201), body
    time.sleep(0.01)
    return body["version"]


def history(v: Vigil) -> list:
    return [c["document"] for c in v.get("/agents/bot/checkpoints")["checkpoints"]]


def local_file(directory: Path) -> dict:
    return json.loads((directory / "bot.json").read_text())


def test_a_pending_copy_newer_than_vigils_version_goes_on_top(
    idle_vigil: Vigil, tmp_path: Path
) -> None:
    up, down = clients(idle_vigil)
    d = tmp_path / "local"
    assert Checkpoint(client=up, directory=d).save({"n": 1}) == 1
    assert person_put(idle_vigil, {"other": True}, if_match=1) == 2  # older than what follows

    offline = Checkpoint(client=down, directory=d)
    assert offline.version == 1, "the last version known, from the local copy"
    assert offline.save({"n": 2}) is None
    assert local_file(d)["pending"] and local_file(d)["version"] == 1  # built on 1

    back = Checkpoint(client=up, directory=d)
    assert back.load() == {"n": 2}
    assert back.version == 3
    assert history(idle_vigil) == [{"n": 2}, {"other": True}, {"n": 1}], "nothing lost"
    assert not local_file(d)["pending"]


def test_a_pending_copy_older_than_vigils_version_is_dropped_on_load(
    idle_vigil: Vigil, tmp_path: Path
) -> None:
    up, down = clients(idle_vigil)
    d = tmp_path / "local"
    assert Checkpoint(client=up, directory=d).save({"n": 1}) == 1
    assert Checkpoint(client=down, directory=d).save({"n": 2}) is None
    assert person_put(idle_vigil, {"newer": True}, if_match=1) == 2

    back = Checkpoint(client=up, directory=d)
    assert back.load() == {"newer": True}
    assert back.version == 2
    assert history(idle_vigil) == [{"newer": True}, {"n": 1}], "the newer version was kept"
    local = local_file(d)
    assert not local["pending"] and local["state"] == {"newer": True}


def test_saving_on_top_of_a_superseded_pending_copy_raises_conflict(
    idle_vigil: Vigil, tmp_path: Path
) -> None:
    up, down = clients(idle_vigil)
    d = tmp_path / "local"
    assert Checkpoint(client=up, directory=d).save({"n": 1}) == 1
    assert Checkpoint(client=down, directory=d).save({"n": 2}) is None
    assert person_put(idle_vigil, {"newer": True}, if_match=1) == 2

    back = Checkpoint(client=up, directory=d)
    with pytest.raises(CheckpointConflict) as e:
        back.save({"n": 3})
    assert e.value.current_version == 2 and back.version == 2
    assert history(idle_vigil) == [{"newer": True}, {"n": 1}]
    # The caller decides: after reading the winner, a save goes through.
    assert back.load() == {"newer": True}
    assert back.save({"n": 3, "merged": True}) == 3


def test_a_save_that_reached_vigil_despite_an_error_is_not_a_conflict(
    idle_vigil: Vigil, tmp_path: Path
) -> None:
    # A save that timed out after vigil had taken it leaves a pending copy of a state that
    # vigil already has (written after the pending copy's time): no conflict, no duplicate.
    up, down = clients(idle_vigil)
    d = tmp_path / "local"
    assert Checkpoint(client=up, directory=d).save({"n": 1}) == 1
    assert Checkpoint(client=down, directory=d).save({"n": 2}) is None
    assert person_put(idle_vigil, {"n": 2}, if_match=1) == 2

    back = Checkpoint(client=up, directory=d)
    assert back.save({"n": 3}) == 3
    assert history(idle_vigil) == [{"n": 3}, {"n": 2}, {"n": 1}]


def test_vigil_without_a_checkpoint_resumes_from_the_local_copy(
    idle_vigil: Vigil, tmp_path: Path
) -> None:
    # E.g. the bot ran by hand first: its local state carries over to vigil.
    d = tmp_path / "local"
    by_hand = Checkpoint("bot", directory=d, client=Client())
    assert by_hand.save({"from": "by hand"}) is None
    up, _ = clients(idle_vigil)
    cp = Checkpoint(client=up, directory=d)
    assert cp.load() == {"from": "by hand"}
    assert cp.version is None
    assert cp.save({"from": "vigil"}) == 1
