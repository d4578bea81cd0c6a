"""Pieces that need no vigil: times, file names, the local file, the HTTP request itself."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from conftest import SRC, clean_env

from vigil_agent import Checkpoint, Client
from vigil_agent._localfile import LocalCopy, LocalFile, file_name
from vigil_agent._timeutil import format_rfc3339, parse_rfc3339, until_timestamp


def test_until_accepts_moments_and_durations() -> None:
    now = 1_000_000.0
    assert until_timestamp(None, now) is None
    assert until_timestamp(30, now) == now + 30
    assert until_timestamp(2.5, now) == now + 2.5
    assert until_timestamp(timedelta(minutes=2), now) == now + 120
    at = datetime.fromtimestamp(now + 60, tz=timezone.utc)
    assert until_timestamp(at, now) == now + 60
    naive_local = datetime.fromtimestamp(now + 60)
    assert until_timestamp(naive_local, now) == pytest.approx(now + 60)
    # The past (or a moment from now) still reaches vigil as the near future.
    assert until_timestamp(-5, now) == now + 1
    assert until_timestamp(datetime(1970, 1, 2, tzinfo=timezone.utc), now) == now + 1
    with pytest.raises(TypeError):
        until_timestamp(True, now)


def test_rfc3339_round_trip() -> None:
    ts = 1796077590.123
    text = format_rfc3339(ts)
    assert text.endswith("Z") and "T" in text
    assert parse_rfc3339(text) == pytest.approx(ts, abs=1e-3)
    assert (
        parse_rfc3339("2026-12-01T10:00:00Z")
        == datetime(2026, 12, 1, 10, tzinfo=timezone.utc).timestamp()
    )
    assert parse_rfc3339("2026-12-01T12:00:00+02:00") == parse_rfc3339("2026-12-01T10:00:00Z")
    with pytest.raises(ValueError):
        parse_rfc3339("yesterday")


def test_file_names_are_safe_and_distinct() -> None:
    assert file_name("bot") == "bot.json"
    assert file_name("trader@BTC_USDT") == "trader@BTC_USDT.json"  # as the Rust client
    assert "/" not in file_name("../../etc/passwd")
    assert not file_name("..").startswith(".")
    assert file_name("my bot/1") == "my_bot_1.json"
    long = file_name("x" * 1000)
    assert len(long) < 200 and long != file_name("x" * 999)


def test_local_file_is_replaced_whole(tmp_path: Path) -> None:
    f = LocalFile(tmp_path / "d" / "bot.json")
    assert f.read() is None
    f.write(LocalCopy('{"n":1}', 100.0, version=1, agent="bot"))
    f.write(LocalCopy('{"n":2}', 200.0, pending=True, base_version=1, agent="bot"))
    copy = f.read()
    assert copy is not None and copy.state() == {"n": 2}
    assert (copy.pending, copy.base_version, copy.version, copy.saved_at) == (True, 1, None, 200.0)
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["bot.json"], "no temporary file left"
    on_disk = json.loads((tmp_path / "d" / "bot.json").read_text())
    assert on_disk == {
        "agent": "bot",
        "version": 1,
        "pending": True,
        "saved_at": 200.0,
        "state": {"n": 2},
    }
    (tmp_path / "d" / "bot.json").write_text('{"agent": "bot", "version": 1, "sta')
    assert f.read() is None  # damaged: ignored (and logged)
    # A copy the Rust client (crates/vigil-agent) wrote reads the same.
    (tmp_path / "d" / "bot.json").write_text(
        '{"agent":"bot","version":3,"pending":false,"saved_at":1.5,"state":{"x":[1]}}'
    )
    copy = f.read()
    assert copy is not None and (copy.version, copy.pending, copy.state()) == (3, False, {"x": [1]})


def test_checkpoint_refuses_what_is_not_json_or_too_large(tmp_path: Path) -> None:
    cp = Checkpoint("bot", directory=tmp_path, client=Client())
    with pytest.raises(TypeError):
        cp.save({"when": datetime.now()})
    with pytest.raises(ValueError):
        cp.save({"x": float("nan")})
    with pytest.raises(ValueError):
        cp.save("x" * (1024 * 1024))
    assert cp.load() is None


class _Recorder(BaseHTTPRequestHandler):
    seen: list = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, dict(self.headers), body))
        if self.path.endswith("/checkpoint") and self.command == "PUT":
            out, status = {"agent": "x", "version": 7, "ts": "2026-12-01T10:00:00.000Z"}, 201
        else:
            out, status = {"accepted": True, "state": "degraded", "note": "n"}, 200
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_PUT = do_GET = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_http_requests_carry_the_token_and_encode_the_agent(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # ignored: vigil is local
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        c = Client(url=url, agent="trader@BTC_USDT", token="vat_secret", http_heartbeat_interval=60)
        c.heartbeat()
        c.heartbeat()  # within the interval: not sent
        c.degraded("429", until=datetime(2099, 1, 1, tzinfo=timezone.utc))
        assert Checkpoint(client=c, directory=tmp_path).save({"a": 1}) == 7
    finally:
        server.shutdown()
    seen = _Recorder.seen
    assert [(m, p) for m, p, _, _ in seen] == [
        ("POST", "/agents/trader%40BTC_USDT/heartbeat"),
        ("POST", "/agents/trader%40BTC_USDT/status"),
        ("PUT", "/agents/trader%40BTC_USDT/checkpoint"),
    ]
    for _, _, headers, _ in seen:
        assert headers["Authorization"] == "Bearer vat_secret"
        assert headers["Content-Type"] == "application/json"
    assert json.loads(seen[1][3]) == {
        "state": "degraded",
        "reason": "429",
        "until": "2099-01-01T00:00:00.000Z",
    }
    assert seen[2][2]["If-Match"] == "0" and json.loads(seen[2][3]) == {"a": 1}
    assert "vat_secret" not in repr(c)


def test_unreachable_vigil_costs_little_and_raises_nothing(tmp_path: Path) -> None:
    from conftest import free_port

    c = Client(url=f"http://127.0.0.1:{free_port()}", agent="bot", token="vat_x")
    started = time.monotonic()
    for _ in range(100):
        c.heartbeat()
        c.degraded("feed down", until=5)
        c.ok()
    assert time.monotonic() - started < 5


def test_adapters_import_without_their_libraries() -> None:
    script = f"""
import sys
sys.path.insert(0, {str(SRC)!r})
sys.modules["tenacity"] = None
sys.modules["pybreaker"] = None
import vigil_agent.adapters, vigil_agent.adapters.tenacity
from vigil_agent.adapters.tenacity import vigil_before_sleep, report
try:
    import vigil_agent.adapters.pybreaker
except ImportError as e:
    print("pybreaker:", e)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], env=clean_env(), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'vigil-agent[pybreaker]'" in out.stdout
