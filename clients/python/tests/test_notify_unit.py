"""The notify-socket channel, against a datagram socket the test binds (no vigil needed)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import List

import pytest

from vigil_agent import Client


class Receiver:
    """A bound datagram socket standing in for vigil's notify socket."""

    def __init__(self, address: "str | bytes") -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2)

    def messages(self, wait: float = 0.1) -> List[str]:
        out = []
        self.sock.settimeout(wait)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except socket.timeout:
            return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "notify.sock"


def test_messages_follow_the_sd_notify_protocol(sock_path: Path) -> None:
    rx = Receiver(str(sock_path))
    c = Client(notify_socket=str(sock_path))
    c.ready()
    c.heartbeat()
    c.progress("step 3\nof 5")
    c.status("warming up")
    before = time.time()
    c.degraded("binance 429, breaker open", until=30)
    for _ in range(20):
        c.degraded("binance 429, breaker open", until=30)  # the same, moments later: not sent
    c.ok()
    c.ok()  # already ok: not sent
    got = rx.messages()
    assert got[:4] == [
        "READY=1",
        "WATCHDOG=1",
        "WATCHDOG=1\nSTATUS=step 3 of 5",
        "STATUS=warming up",
    ]
    degraded, until = got[4].split("\n")
    assert degraded == "DEGRADED=binance 429, breaker open"
    assert until.startswith("DEGRADED_UNTIL=")
    assert before + 30 - 0.001 <= float(until.split("=")[1]) <= time.time() + 30 + 0.001
    assert got[5:] == ["WATCHDOG=1\nDEGRADED=0"]  # ok() is a sign of life too


def test_a_changed_or_later_declaration_is_sent_again(sock_path: Path) -> None:
    rx = Receiver(str(sock_path))
    c = Client(notify_socket=str(sock_path), dedup_window=5.0)
    c.degraded("429", until=30)
    c.degraded("429", until=60)  # a later until: sent
    c.degraded("429 again", until=60)  # another reason: sent
    c.degraded("429 again")  # no until now: sent
    assert [m.split("\n")[0] for m in rx.messages()] == ["DEGRADED=429"] * 2 + [
        "DEGRADED=429 again"
    ] * 2
    c.dedup_window = 0.0
    c.degraded("429 again")
    assert rx.messages() == ["DEGRADED=429 again"]


def test_abstract_socket_address() -> None:
    name = f"vigil-agent-test-{os.getpid()}"
    rx = Receiver(b"\0" + name.encode())
    Client(notify_socket="@" + name).heartbeat()
    assert rx.messages() == ["WATCHDOG=1"]


def test_sending_survives_vigil_going_away_and_coming_back(sock_path: Path, caplog) -> None:
    c = Client(notify_socket=str(sock_path))
    for _ in range(3):
        c.heartbeat()  # nothing bound there: dropped, never raised
        c.degraded("feed down", until=10)
    assert [r for r in caplog.records if "cannot send to the notify socket" in r.getMessage()]
    rx = Receiver(str(sock_path))  # a restarted vigil binds the same path again
    c.heartbeat()
    assert rx.messages() == ["WATCHDOG=1"]
    rx.close()
    os.unlink(sock_path)
    c.heartbeat()
    rx = Receiver(str(sock_path))
    c.heartbeat()
    assert rx.messages() == ["WATCHDOG=1"]


def test_a_full_queue_never_blocks_the_bot(sock_path: Path) -> None:
    rx = Receiver(str(sock_path))
    rx.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    c = Client(notify_socket=str(sock_path))
    started = time.monotonic()
    for _ in range(20000):
        c.heartbeat()  # vigil "hung": nobody reads
    c.status("still here")  # retried briefly, then dropped
    assert time.monotonic() - started < 5
    assert rx.messages()[0] == "WATCHDOG=1"


def test_bad_reasons_are_refused_and_long_ones_cut(sock_path: Path) -> None:
    rx = Receiver(str(sock_path))
    c = Client(notify_socket=str(sock_path))
    for bad in ("", "   ", "0", "\n"):
        with pytest.raises(ValueError):
            c.degraded(bad)
    with pytest.raises(TypeError):
        c.degraded("x", until="tomorrow")  # type: ignore[arg-type]
    c.degraded("x" * 500)
    assert rx.messages() == ["DEGRADED=" + "x" * 200]
