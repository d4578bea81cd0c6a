"""The checkpoint's rules against a real vigil: conflicts, vigil not keeping a save now, and
the re-sync of the local copy at ``load()`` (the same rules as the Rust client's).

These drive the client from the test process: with no `[api] token` configured, a request
with a token that is not an agent's (``vat_…``) acts as a person, who may write any agent's
checkpoint. "vigil unreachable" is a client pointed at a closed port, sharing the local
directory with the one that reaches vigil; a `Proxy` between the client and vigil stands
for a vigil that answers 5xx or 401, or a request whose answer never comes.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import pytest
from conftest import Vigil, free_port

from vigil_agent import Checkpoint, CheckpointConflict, Client, VigilError
from vigil_agent._checkpoint_api import same_document

PERSON = "person-token-for-tests"


@pytest.fixture
def idle_vigil(vigil: Vigil) -> Vigil:
    vigil.write_config({"bot": {"script": "while True:\n    time.sleep(1)\n"}})
    vigil.start()
    vigil.running_pid("bot")
    return vigil


class _ProxyHandler(BaseHTTPRequestHandler):
    server: "_ProxyServer"

    def _handle(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        proxy.seen.append((self.command, self.headers.get("If-Match")))
        hook = proxy.before.pop(self.command, None)
        if hook is not None:  # e.g. another writer, just before this request reaches vigil
            hook()
        mode = proxy.mode if proxy.method in (None, self.command) else "forward"
        if isinstance(mode, int):  # vigil's answer, without it
            data = json.dumps({"error": f"the test's proxy answers {mode}"}).encode()
            self._reply(mode, "application/json", None, data)
            return
        if mode == "hang":  # no answer until long after the client gave up
            time.sleep(proxy.hang)
            self.close_connection = True
            return
        if mode == "drop":  # the connection closes: no answer
            self.close_connection = True
            return
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        try:
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() in ("authorization", "content-type", "if-match", "accept")
            }
            conn.request(self.command, self.path, body=body, headers=headers)
            res = conn.getresponse()
            status, ctype, etag, data = (
                res.status,
                res.getheader("Content-Type"),
                res.getheader("ETag"),
                res.read(),
            )
        finally:
            conn.close()
        if mode in ("lose", "late"):  # vigil has it; its answer is lost, or comes too late
            proxy.taken.set()
            if mode == "late":
                time.sleep(proxy.hang)
            self.close_connection = True
            return
        if mode in ("no-etag", "bare"):  # vigil's answer without its ETag header
            etag = None
        if mode in ("no-version", "bare"):  # … or without the version in its body
            answer = json.loads(data)
            answer.pop("version", None)
            data = json.dumps(answer).encode()
        self._reply(status, ctype, etag, data)

    def _reply(self, status: int, ctype: Optional[str], etag: Optional[str], data: bytes) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        if etag:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = _handle

    def log_message(self, *args: object) -> None:
        pass


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    proxy: "Proxy"


class Proxy:
    """Between a client and vigil. ``mode``: ``"forward"``; an HTTP status to answer instead
    of vigil; ``"drop"`` (no answer, not forwarded); ``"hang"`` (not forwarded, no answer for
    ``hang`` seconds); ``"lose"`` (forwarded, vigil's answer lost); ``"late"`` (forwarded,
    vigil's answer lost after ``hang`` seconds); ``"no-etag"``, ``"no-version"``, ``"bare"``
    (forwarded, vigil's answer without its ``ETag``, without ``version`` in its body, without
    both). ``method``: the only method the mode applies to (others are forwarded); ``None``
    for all. ``before[method]``: run once before the next request with that method."""

    def __init__(self, v: Vigil) -> None:
        self.port = v.port
        self.mode: Union[str, int] = "forward"
        self.method: Optional[str] = None
        self.hang = 2.0
        #: Set once a request whose answer is lost has reached vigil.
        self.taken = threading.Event()
        self.seen: List[Tuple[str, Optional[str]]] = []
        self.before: Dict[str, Callable[[], None]] = {}
        self._server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.proxy = self
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def set(self, mode: Union[str, int], method: Optional[str] = None) -> None:
        self.mode, self.method = mode, method

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy(idle_vigil: Vigil):
    p = Proxy(idle_vigil)
    try:
        yield p
    finally:
        p.close()


def clients(v: Vigil) -> "tuple[Client, Client]":
    up = Client(url=v.url, agent="bot", token=PERSON)
    down = Client(url=f"http://127.0.0.1:{free_port()}", agent="bot", token=PERSON)
    return up, down


def proxied(p: Proxy, directory: Path) -> Checkpoint:
    return Checkpoint(client=Client(url=p.url, agent="bot", token=PERSON), directory=directory)


def set_timeout(cp: Checkpoint, seconds: float) -> None:
    """How long the checkpoint's requests may take (short only while the proxy hangs: a
    loaded machine may take more than that for a real answer)."""
    assert cp._api is not None
    cp._api.timeout = seconds


def person_put(v: Vigil, document: object, if_match: int) -> int:
    status, body = v.request(
        "PUT", "/agents/bot/checkpoint", document, headers={"If-Match": str(if_match)}
    )
    assert status in (200, 201), body
    return body["version"]


def history(v: Vigil) -> list:
    return [c["document"] for c in v.get("/agents/bot/checkpoints")["checkpoints"]]


def local_file(directory: Path) -> dict:
    return json.loads((directory / "bot.json").read_text())


# -- 412: not adopted --------------------------------------------------------------------


def test_a_conflict_is_not_adopted_saves_conflict_until_load(
    idle_vigil: Vigil, tmp_path: Path
) -> None:
    up, _ = clients(idle_vigil)
    cp = Checkpoint(client=up, directory=tmp_path)
    assert cp.save({"n": 1}) == 1
    assert person_put(idle_vigil, {"n": 1, "corrected": True}, if_match=1) == 2

    for _ in range(2):  # not only the first save: every save until load()
        with pytest.raises(CheckpointConflict) as e:
            cp.save({"n": 2})
        assert e.value.current_version == 2 and e.value.status == 412
        assert "load()" in str(e.value)
        assert cp.version == 1, "vigil's version is not taken as the one this copy built on"
    assert history(idle_vigil) == [{"n": 1, "corrected": True}, {"n": 1}], "the correction stays"

    assert cp.load() == {"n": 1, "corrected": True}
    assert cp.version == 2
    assert cp.save({"n": 2, "corrected": True}) == 3


# -- vigil cannot keep it now: pending, never raised -----------------------------------------


@pytest.mark.parametrize("answer", [500, 502, 503, 504, 507, 401, "drop", "hang"])
def test_vigil_that_cannot_keep_a_save_now_gets_it_later(
    idle_vigil: Vigil, proxy: Proxy, tmp_path: Path, answer: Union[str, int]
) -> None:
    cp = proxied(proxy, tmp_path)
    assert cp.save({"n": 1}) == 1
    proxy.set(answer)
    if answer == "hang":
        set_timeout(cp, 0.5)
    assert cp.save({"n": 2}) is None, "kept locally, not raised"
    assert cp.save({"n": 3}) is None
    local = local_file(tmp_path)
    assert local["pending"] and local["version"] == 1 and local["state"] == {"n": 3}
    assert cp.load() == {"n": 3}, "vigil cannot be asked: the local copy"
    assert cp.version == 1

    proxy.set("forward")
    set_timeout(cp, 5.0)
    assert cp.load() == {"n": 3}, "built on vigil's latest version: sent"
    assert cp.version == 2
    assert history(idle_vigil) == [{"n": 3}, {"n": 1}]
    local = local_file(tmp_path)
    assert not local["pending"] and local["version"] == 2
    assert cp.save({"n": 4}) == 3


def test_saves_go_on_from_the_known_version_when_vigil_is_back(
    idle_vigil: Vigil, proxy: Proxy, tmp_path: Path
) -> None:
    cp = proxied(proxy, tmp_path)
    assert cp.save({"n": 1}) == 1
    proxy.set(503)
    assert cp.save({"n": 2}) is None
    proxy.set("forward")
    # The pending copy was built on version 1, as this save is: it goes on top of 1.
    assert cp.save({"n": 3}) == 2
    assert history(idle_vigil) == [{"n": 3}, {"n": 1}]
    assert not local_file(tmp_path)["pending"]


# -- a save that got no answer but was taken -------------------------------------------------


def test_a_save_taken_without_an_answer_is_adopted_by_the_next_save(
    idle_vigil: Vigil, proxy: Proxy, tmp_path: Path
) -> None:
    cp = proxied(proxy, tmp_path)
    assert cp.save({"n": 1}) == 1
    proxy.set("lose", "PUT")
    assert cp.save({"n": 2}) is None, "no answer: kept locally"
    assert history(idle_vigil) == [{"n": 2}, {"n": 1}], "yet vigil has it"
    proxy.set("forward")
    assert cp.save({"n": 3}) == 3, "not a conflict: vigil's version 2 is this copy's own"
    assert cp.version == 3
    assert history(idle_vigil) == [{"n": 3}, {"n": 2}, {"n": 1}]
    assert not local_file(tmp_path)["pending"]


def test_a_save_taken_without_an_answer_is_marked_synced_by_load(
    idle_vigil: Vigil, proxy: Proxy, tmp_path: Path
) -> None:
    cp = proxied(proxy, tmp_path)
    assert cp.save({"n": 1}) == 1
    proxy.set("late", "PUT")  # taken by vigil; its answer comes after the client's timeout
    set_timeout(cp, 0.5)
    assert cp.save({"n": 2}) is None
    assert proxy.taken.wait(10)
    proxy.set("forward")
    set_timeout(cp, 5.0)
    proxy.seen.clear()
    assert cp.load() == {"n": 2}
    assert cp.version == 2
    assert [m for m, _ in proxy.seen] == ["GET"], "nothing sent twice"
    assert history(idle_vigil) == [{"n": 2}, {"n": 1}]
    local = local_file(tmp_path)
    assert not local["pending"] and local["version"] == 2 and local["state"] == {"n": 2}


def test_only_the_copys_own_state_is_adopted_after_a_conflict(
    idle_vigil: Vigil, proxy: Proxy, tmp_path: Path
) -> None:
    # The save got no answer and was taken (2), then a person corrected it (3): the next
    # save conflicts, and keeps conflicting until load().
    cp = proxied(proxy, tmp_path)
    assert cp.save({"n": 1}) == 1
    proxy.set("lose", "PUT")
    assert cp.save({"n": 2}) is None
    assert person_put(idle_vigil, {"n": 2, "corrected": True}, if_match=2) == 3
    proxy.set("forward")
    for _ in range(2):
        with pytest.raises(CheckpointConflict) as e:
            cp.save({"n": 3})
        assert e.value.current_version == 3 and cp.version == 1
    assert cp.load() == {"n": 2, "corrected": True}
    assert cp.save({"n": 3, "corrected": True}) == 4


# -- re-sync at load() -----------------------------------------------------------------------


def test_a_pending_copy_built_on_vigils_latest_goes_on_top_at_load(
    idle_vigil: Vigil, tmp_path: Path
) -> None:
    up, down = clients(idle_vigil)
    assert Checkpoint(client=up, directory=tmp_path).save({"n": 1}) == 1
    offline = Checkpoint(client=down, directory=tmp_path)
    assert offline.version == 1, "the last version known, from the local copy"
    assert offline.save({"n": 2}) is None
    assert local_file(tmp_path)["pending"] and local_file(tmp_path)["version"] == 1

    back = Checkpoint(client=up, directory=tmp_path)
    assert back.version is None, "a pending copy gives no known version"
    assert back.load() == {"n": 2}
    assert back.version == 2
    assert history(idle_vigil) == [{"n": 2}, {"n": 1}]
    assert not local_file(tmp_path)["pending"]


def test_a_pending_copy_stays_pending_when_vigil_cannot_keep_it_at_load(
    idle_vigil: Vigil, proxy: Proxy, tmp_path: Path
) -> None:
    cp = proxied(proxy, tmp_path)
    assert cp.save({"n": 1}) == 1
    proxy.set("drop")
    assert cp.save({"n": 2}) is None
    proxy.set(503, "PUT")  # vigil answers reads, but cannot keep a write
    assert cp.load() == {"n": 2}, "the pending copy is the state"
    local = local_file(tmp_path)
    assert local["pending"] and local["version"] == 1 and local["state"] == {"n": 2}
    assert history(idle_vigil) == [{"n": 1}]
    proxy.set("forward")
    assert cp.load() == {"n": 2} and cp.version == 2


@pytest.mark.parametrize("clock", ["now", "far future"])
def test_a_newer_version_in_vigil_wins_over_a_pending_copy_whatever_the_clocks(
    idle_vigil: Vigil, tmp_path: Path, clock: str
) -> None:
    up, down = clients(idle_vigil)
    assert Checkpoint(client=up, directory=tmp_path).save({"n": 1}) == 1
    assert person_put(idle_vigil, {"n": 1, "corrected": True}, if_match=1) == 2
    # Saved after the correction, while vigil could not be reached: built on version 1.
    assert Checkpoint(client=down, directory=tmp_path).save({"n": 2}) is None
    if clock == "far future":  # an agent's clock ahead of vigil's changes nothing
        raw = local_file(tmp_path)
        raw["saved_at"] = time.time() + 10 * 365 * 86400
        (tmp_path / "bot.json").write_text(json.dumps(raw))

    back = Checkpoint(client=up, directory=tmp_path)
    assert back.load() == {"n": 1, "corrected": True}
    assert back.version == 2
    assert history(idle_vigil) == [{"n": 1, "corrected": True}, {"n": 1}]
    local = local_file(tmp_path)
    assert not local["pending"] and local["version"] == 2
    assert local["state"] == {"n": 1, "corrected": True}, "the local copy is vigil's now"
    assert back.save({"n": 2, "corrected": True}) == 3


def test_a_correction_made_while_vigil_was_away_is_never_overwritten(
    idle_vigil: Vigil, proxy: Proxy, tmp_path: Path
) -> None:
    # One copy of the agent all along: vigil away, a save kept locally; meanwhile a person
    # corrects the checkpoint; vigil back.
    cp = proxied(proxy, tmp_path)
    assert cp.save({"n": 1}) == 1
    proxy.set("drop")
    assert cp.save({"n": 2}) is None
    assert person_put(idle_vigil, {"n": 1, "corrected": True}, if_match=1) == 2
    proxy.set("forward")
    for _ in range(2):
        with pytest.raises(CheckpointConflict):
            cp.save({"n": 3})
    assert cp.load() == {"n": 1, "corrected": True}
    assert not local_file(tmp_path)["pending"], "the pending copy lost to vigil's"
    assert cp.save({"n": 3, "corrected": True}) == 3
    assert history(idle_vigil) == [
        {"n": 3, "corrected": True},
        {"n": 1, "corrected": True},
        {"n": 1},
    ]


def test_vigil_without_a_checkpoint_gets_the_synced_local_copy_back(
    idle_vigil: Vigil, tmp_path: Path
) -> None:
    # E.g. the bot ran by hand first: its local state carries over to vigil.
    by_hand = Checkpoint("bot", directory=tmp_path, client=Client())
    assert by_hand.save({"from": "by hand"}) is None
    up, _ = clients(idle_vigil)
    cp = Checkpoint(client=up, directory=tmp_path)
    assert cp.load() == {"from": "by hand"}
    assert cp.version == 1, "sent to vigil (If-Match: 0)"
    assert history(idle_vigil) == [{"from": "by hand"}]
    assert cp.save({"from": "vigil"}) == 2


def test_a_store_that_lost_its_checkpoints_gets_the_copy_back(
    idle_vigil: Vigil, tmp_path: Path
) -> None:
    # A copy synced with version 7 of a store that is gone (as the Rust client writes it).
    (tmp_path / "bot.json").write_text(
        '{"agent":"bot","version":7,"pending":false,"saved_at":1.5,"state":{"x":[1]}}'
    )
    up, _ = clients(idle_vigil)
    cp = Checkpoint(client=up, directory=tmp_path)
    assert cp.version == 7
    assert cp.load() == {"x": [1]}
    assert cp.version == 1
    assert history(idle_vigil) == [{"x": [1]}]
    local = local_file(tmp_path)
    assert not local["pending"] and local["version"] == 1


def test_a_synced_copy_is_refreshed_from_vigil(idle_vigil: Vigil, tmp_path: Path) -> None:
    up, _ = clients(idle_vigil)
    assert Checkpoint(client=up, directory=tmp_path).save({"n": 1}) == 1
    assert person_put(idle_vigil, {"n": 5}, if_match=1) == 2
    cp = Checkpoint(client=up, directory=tmp_path)
    assert cp.load() == {"n": 5} and cp.version == 2
    local = local_file(tmp_path)
    assert (local["pending"], local["version"], local["state"]) == (False, 2, {"n": 5})


def pending_file(directory: Path, base_version: int, state: object) -> None:
    """A pending local copy built on ``base_version`` (as the Rust client writes it)."""
    (directory / "bot.json").write_text(
        json.dumps(
            {
                "agent": "bot",
                "version": base_version,
                "pending": True,
                "saved_at": 1.5,
                "state": state,
            }
        )
    )


@pytest.mark.parametrize("in_vigil", [0, 2])
def test_a_pending_copy_built_on_more_than_vigil_has_goes_on_top_at_load(
    idle_vigil: Vigil, proxy: Proxy, tmp_path: Path, in_vigil: int
) -> None:
    # vigil has less than the copy was built on (5): a lost store, a restored backup.
    for n in range(in_vigil):
        assert person_put(idle_vigil, {"restored": n}, if_match=n) == n + 1
    pending_file(tmp_path, 5, {"n": 6})
    cp = proxied(proxy, tmp_path)
    assert cp.load() == {"n": 6}
    assert proxy.seen == [("GET", None), ("PUT", str(in_vigil))], "on top of vigil's version"
    assert cp.version == in_vigil + 1
    assert history(idle_vigil)[0] == {"n": 6}
    local = local_file(tmp_path)
    assert not local["pending"] and local["version"] == in_vigil + 1
    assert cp.save({"n": 7}) == in_vigil + 2


def test_a_pending_copy_vigil_has_is_marked_synced_even_below_its_base(
    idle_vigil: Vigil, proxy: Proxy, tmp_path: Path
) -> None:
    assert person_put(idle_vigil, {"n": 6}, if_match=0) == 1
    pending_file(tmp_path, 5, {"n": 6})
    cp = proxied(proxy, tmp_path)
    assert cp.load() == {"n": 6}
    assert [m for m, _ in proxy.seen] == ["GET"], "landed: not sent again"
    assert cp.version == 1 and history(idle_vigil) == [{"n": 6}]
    local = local_file(tmp_path)
    assert not local["pending"] and local["version"] == 1


def test_a_write_between_the_look_and_the_send_at_load_wins(
    idle_vigil: Vigil, proxy: Proxy, tmp_path: Path
) -> None:
    cp = proxied(proxy, tmp_path)
    assert cp.save({"n": 1}) == 1
    proxy.set("drop")
    assert cp.save({"n": 2}) is None
    proxy.set("forward")
    # load() sees version 1 (the copy's base) and sends the copy; a person writes first.
    proxy.before["PUT"] = lambda: person_put(idle_vigil, {"n": 1, "corrected": True}, 1)
    proxy.seen.clear()
    assert cp.load() == {"n": 1, "corrected": True}, "vigil's latest, asked again; not raised"
    assert proxy.seen == [("GET", None), ("PUT", "1"), ("GET", None)]
    assert cp.version == 2
    assert history(idle_vigil) == [{"n": 1, "corrected": True}, {"n": 1}]
    local = local_file(tmp_path)
    assert not local["pending"] and local["version"] == 2
    assert local["state"] == {"n": 1, "corrected": True}
    assert cp.save({"n": 2, "corrected": True}) == 3


def test_a_write_between_the_look_and_the_send_with_vigil_gone_gives_the_local_copy(
    idle_vigil: Vigil, proxy: Proxy, tmp_path: Path
) -> None:
    cp = proxied(proxy, tmp_path)
    assert cp.save({"n": 1}) == 1
    proxy.set("drop")
    assert cp.save({"n": 2}) is None
    proxy.set("forward")

    def another_writer_then_vigil_gone() -> None:
        person_put(idle_vigil, {"n": 1, "corrected": True}, 1)
        proxy.set(503, "GET")  # this PUT is answered (412); the GET after it is not

    proxy.before["PUT"] = another_writer_then_vigil_gone
    assert cp.load() == {"n": 2}, "vigil cannot be asked again: the local copy, not raised"
    local = local_file(tmp_path)
    assert local["pending"] and local["version"] == 1 and local["state"] == {"n": 2}
    proxy.set("forward")
    assert cp.load() == {"n": 1, "corrected": True}, "then vigil's newer version wins"
    assert cp.version == 2 and not local_file(tmp_path)["pending"]


@pytest.mark.parametrize("answer", ["no-etag", "no-version"])
def test_the_version_of_a_put_comes_from_its_etag_or_its_body(
    idle_vigil: Vigil, proxy: Proxy, tmp_path: Path, answer: str
) -> None:
    proxy.set(answer, "PUT")
    cp = proxied(proxy, tmp_path)
    assert cp.save({"n": 1}) == 1  # 201
    assert cp.save({"n": 2}) == 2  # 200
    assert cp.version == 2
    local = local_file(tmp_path)
    assert not local["pending"] and local["version"] == 2
    # The send at load() too.
    proxy.set("drop")
    assert cp.save({"n": 3}) is None
    proxy.set(answer, "PUT")
    assert cp.load() == {"n": 3} and cp.version == 3
    assert history(idle_vigil) == [{"n": 3}, {"n": 2}, {"n": 1}]


def test_a_put_answered_without_a_version_is_kept_pending_until_vigil_is_asked(
    idle_vigil: Vigil, proxy: Proxy, tmp_path: Path
) -> None:
    cp = proxied(proxy, tmp_path)
    assert cp.save({"n": 1}) == 1
    proxy.set("bare", "PUT")  # taken, but as which version the answer does not say
    assert cp.save({"n": 2}) is None
    assert local_file(tmp_path)["pending"]
    proxy.set("forward")
    assert cp.load() == {"n": 2} and cp.version == 2, "vigil has it: marked synced"
    assert history(idle_vigil) == [{"n": 2}, {"n": 1}]


def test_no_checkpoint_yet_is_not_an_unknown_agent(idle_vigil: Vigil, tmp_path: Path) -> None:
    up, _ = clients(idle_vigil)
    cp = Checkpoint(client=up, directory=tmp_path)
    assert cp.load() is None and cp.version is None
    stranger = Client(url=idle_vigil.url, agent="nobody", token=PERSON)
    (tmp_path / "nobody").mkdir()
    (tmp_path / "nobody" / "nobody.json").write_text(
        '{"agent":"nobody","version":0,"pending":false,"saved_at":1.5,"state":{"x":1}}'
    )
    with pytest.raises(VigilError) as e:
        Checkpoint(client=stranger, directory=tmp_path / "nobody").load()
    assert e.value.status == 404 and not isinstance(e.value, CheckpointConflict)


# -- the local file --------------------------------------------------------------------------


def test_a_local_file_that_cannot_be_written_fails_only_saves_vigil_did_not_take(
    idle_vigil: Vigil, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the directory should be")
    unwritable = blocker / "checkpoints"  # any write under it fails, even as root
    up, down = clients(idle_vigil)
    cp = Checkpoint(client=up, directory=unwritable)
    assert cp.save({"n": 1}) == 1, "vigil has it: the local copy is best effort"
    assert cp.save({"n": 2}) == 2
    assert cp.load() == {"n": 2}
    with pytest.raises(OSError):
        Checkpoint(client=down, directory=unwritable).save({"n": 3})
    with pytest.raises(OSError):
        Checkpoint("bot", directory=unwritable, client=Client()).save({"n": 3})


def test_documents_are_compared_as_json_values() -> None:
    assert same_document('{"a":1,"b":[true,null]}', {"b": [True, None], "a": 1})
    assert not same_document('{"a":true}', {"a": 1}), "true is not 1 in JSON"
    assert not same_document('{"a":1.0}', {"a": 1})
    assert not same_document('{"a":1}', {"a": 2})
    assert not same_document("not json", {"a": 1})
