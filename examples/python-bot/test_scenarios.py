"""Seed 004's test plan ("Testing the Persistence Solution"), automated, with real processes.

Each test copies this example (vigil.toml, bot.py, exchange.py) into a temporary directory,
gives it free ports and a state dir of its own, and runs the real vigil on it — which runs
the real exchange stand-in and the two real bots:

1. crash recovery: `kill -9` a bot mid-cycle, several times; it resumes from its checkpoint,
   no tick is decided twice or skipped, no order is sent twice;
2. vigil down for a minute (`SCENARIO_OUTAGE_S`, default 60): the bots trade on, their
   checkpoints go to the local file, and vigil has them all once it is back — also with
   PostgreSQL as the store, made unreachable for the outage (`VIGIL_TEST_POSTGRES_URL`);
3. the exchange answers 429 for two minutes (`SCENARIO_RATE_LIMIT_S`, default 120): the
   breaker opens, the bots declare themselves degraded, vigil does not restart them although
   their heartbeats stop, and they resume (and declare ok) when the exchange recovers.

(Seed 004's fourth test, a week-long run, is simulated in vigil's Rust tests.)

    cd <repo> && python -m pytest -q examples/python-bot/test_scenarios.py

Needs the vigil binary (`$VIGIL_BIN`, default `<repo>/target/debug/vigil`) and a Python with
tenacity, pybreaker and pytest (the client itself comes from `<repo>/clients/python/src`).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CLIENT_SRC = REPO / "clients" / "python" / "src"
VIGIL_BIN = Path(os.environ.get("VIGIL_BIN") or REPO / "target" / "debug" / "vigil").resolve()

OUTAGE_S = float(os.environ.get("SCENARIO_OUTAGE_S", "60"))
RATE_LIMIT_S = float(os.environ.get("SCENARIO_RATE_LIMIT_S", "120"))
POSTGRES_URL = os.environ.get("VIGIL_TEST_POSTGRES_URL")

SYMBOLS = ("BTC_USDT", "ETH_USDT")

#: What vigil sets for its runs: inherited by the vigil under test, they would mislead it
#: (VIGIL_STATE_DIR would even replace its state dir).
VIGIL_VARS = (
    "VIGIL_URL", "VIGIL_AGENT", "VIGIL_AGENT_TOKEN", "VIGIL_STATE_DIR", "VIGIL_CHECKPOINT_DIR",
    "VIGIL_CONFIG", "VIGIL_TOKEN", "VIGIL_RUN", "VIGIL_INSTANCE", "NOTIFY_SOCKET",
)

TICK_LINE = re.compile(r"\btick=(\d+) price=\S+ action=(\w+) position=(-?\d+)")
RUN_LINE = re.compile(r"bot: trading \S+ on \S+, decisions in \S+ \(pid (\d+)\)")
RESUMED_LINE = re.compile(r"resumed from checkpoint: last_tick=(\d+) position=(-?\d+)")


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 - polled again until the deadline
            last_error = e
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, timeout: float = 5.0) -> Tuple[int, Any]:
    """(status, parsed JSON body) of one request, proxies from the environment ignored."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as res:
            raw = res.read()
            return res.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


class TcpProxy:
    """A TCP relay in front of PostgreSQL that the test can cut (``stop``) and restore."""

    def __init__(self, target: Tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: Optional[socket.socket] = None
        self._conns: List[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut every relayed one."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# ---------------------------------------------------------------------------------------
# One deployment of the example: its files, its vigil, its agents
# ---------------------------------------------------------------------------------------


class Deployment:
    """The example copied to ``root/app`` and run by a vigil with state in ``root/state``."""

    def __init__(self, root: Path, store_url: Optional[str] = None) -> None:
        self.root = root
        self.app = root / "app"
        self.state = root / "state"
        self.api_port = free_port()
        self.exchange_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.exchange_url = f"http://127.0.0.1:{self.exchange_port}"
        # With PostgreSQL the checkpoints of every vigil using that database meet: a name of
        # this test's own keeps it apart from other runs.
        self.template = f"trader_{uuid.uuid4().hex[:8]}" if store_url else "trader"
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._outputs: List[Path] = []
        self.app.mkdir(parents=True)
        for name in ("bot.py", "exchange.py"):
            shutil.copy(HERE / name, self.app / name)
        self._write_config(store_url)
        # `python3` in the agents' commands must be a Python with tenacity and pybreaker:
        # this one (run by its own path, so that a virtualenv's finds its packages).
        self.bin = root / "bin"
        self.bin.mkdir()
        wrapper = self.bin / "python3"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        wrapper.chmod(0o755)

    def _write_config(self, store_url: Optional[str]) -> None:
        text = (HERE / "vigil.toml").read_text()
        for old, new in (
            ("127.0.0.1:9120", f"127.0.0.1:{self.api_port}"),
            ("127.0.0.1:8765", f"127.0.0.1:{self.exchange_port}"),
        ):
            assert old in text, f"vigil.toml no longer mentions {old}: update this test"
            text = text.replace(old, new)
        if self.template != "trader":
            text, n = re.subn(r"\bagents\.trader\b", f"agents.{self.template}", text)
            assert n >= 3, "vigil.toml's [agents.trader] blocks moved: update this test"
        if store_url:
            text += f'\n[store]\nurl = "{store_url}"\n'
        (self.app / "vigil.toml").write_text(text)

    # -- names and files ----------------------------------------------------------------

    def agent(self, symbol: str) -> str:
        return f"{self.template}@{symbol}"

    def db(self, symbol: str) -> Path:
        return self.app / "data" / f"{symbol}.db"

    def log(self, agent: str) -> str:
        path = self.state / "logs" / f"{agent}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def local_checkpoint(self, agent: str) -> Optional[Dict[str, Any]]:
        path = self.state / "agent-checkpoints" / f"{agent}.json"
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None

    def decisions(self, symbol: str) -> List[Dict[str, Any]]:
        """The bot's decisions table, oldest first."""
        if not self.db(symbol).exists():
            return []
        with sqlite3.connect(self.db(symbol), timeout=10) as c:
            c.row_factory = sqlite3.Row
            rows = c.execute("SELECT * FROM decisions ORDER BY tick_id").fetchall()
        return [dict(r) for r in rows]

    def orders(self, symbol: str) -> List[Dict[str, Any]]:
        """Every order the exchange received for ``symbol`` (duplicates included)."""
        path = self.app / "data" / "exchange.db"
        if not path.exists():
            return []
        with sqlite3.connect(path, timeout=10) as c:
            c.row_factory = sqlite3.Row
            rows = c.execute("SELECT * FROM orders WHERE symbol = ? ORDER BY seq",
                             (symbol,)).fetchall()
        return [dict(r) for r in rows]

    # -- vigil ----------------------------------------------------------------------------

    def env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in VIGIL_VARS}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env["PYTHONPATH"] = str(CLIENT_SRC)
        env["BOT_FAULT_INJECTION"] = "1"  # bot.py's Faults: used by the crash scenario
        env.pop("PYTHONHOME", None)
        return env

    def start_vigil(self) -> None:
        out = self.root / f"vigil-{len(self._outputs)}.out"
        self._outputs.append(out)
        with open(out, "wb") as f:
            self.proc = subprocess.Popen(
                [str(VIGIL_BIN), "run", "-c", str(self.app / "vigil.toml"),
                 "--state-dir", str(self.state)],
                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env(), cwd=self.root,
            )
        wait_for("vigil's API", self._answering, timeout=30)

    def _answering(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"vigil exited with {self.proc.returncode}:\n{self.output()}")
        try:
            return http("GET", self.url + "/health", timeout=2)[0] in (200, 503)
        except OSError:
            return False

    def kill_vigil(self) -> None:
        """SIGKILL vigil alone: its agents live on (by design), for the next vigil to adopt."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self._outputs if p.exists())

    def get(self, path: str) -> Any:
        status, body = http("GET", self.url + path)
        if status != 200:  # (not an AssertionError: wait_for polls again)
            raise RuntimeError(f"GET {path}: {status} {body}")
        return body

    def status(self, agent: str) -> Dict[str, Any]:
        return dict(self.get(f"/status/{quote(agent)}"))

    def audit(self, agent: str) -> List[Dict[str, Any]]:
        return list(self.get(f"/audit?agent={quote(agent)}&limit=10000")["records"])

    def checkpoint(self, agent: str) -> Tuple[int, Any]:
        # With PostgreSQL unreachable, vigil may hold a request for its pool's timeout (3 s)
        # before it answers 503.
        return http("GET", f"{self.url}/agents/{quote(agent)}/checkpoint", timeout=30)

    def running_pid(self, agent: str, not_pid: Optional[int] = None, timeout: float = 60) -> int:
        def check() -> Optional[int]:
            s = self.status(agent)
            pid = s.get("pid")
            if s.get("state") == "running" and pid and pid != not_pid:
                return int(pid)
            return None

        return int(wait_for(f"{agent} running (pid other than {not_pid})", check, timeout))

    def exchange_admin(self, what: str, seconds: float) -> None:
        status, body = http("POST", f"{self.exchange_url}/admin/{what}", {"seconds": seconds})
        assert status == 200, body

    # -- the end ----------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop vigil and every process of this deployment, whatever state the test left."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                http("POST", self.url + "/shutdown", {}, timeout=5)
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # Agents outlive a killed vigil: find this deployment's by their working directory or
        # command line (vigil's own names the config), and kill them by pid.
        for pid in self._our_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def report(self) -> str:
        """What happened, for a failed test: vigil's output and the end of every log."""
        parts = [f"=== vigil output ({self.root})", _tail(self.output(), 60)]
        logs = self.state / "logs"
        for path in sorted(logs.glob("*.log")) if logs.exists() else []:
            parts += [f"=== {path.name}", _tail(path.read_text(errors="replace"), 40)]
        return "\n".join(parts)

    def _our_pids(self) -> List[int]:
        root = str(self.root)
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cwd = os.readlink(entry / "cwd")
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cwd == root or cwd.startswith(root + os.sep) or root + os.sep in cmdline:
                found.append(int(entry.name))
        return found


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """A factory of deployments (``deployment(store_url=None)``), all cleaned up at the end."""
    if not VIGIL_BIN.exists():
        pytest.skip(f"no vigil binary at {VIGIL_BIN} (build it, or set VIGIL_BIN)")
    for module in ("tenacity", "pybreaker"):
        pytest.importorskip(module, reason=f"the bot needs {module} (pip install {module})")
    made: List[Deployment] = []

    def make(store_url: Optional[str] = None) -> Deployment:
        d = Deployment(tmp_path / f"d{len(made)}", store_url)
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            d.cleanup()
            print(d.report())  # shown by pytest when the test failed


def _tail(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[-n:])


def start_and_trade(d: Deployment) -> Dict[str, int]:
    """Start vigil; wait until both bots run and vigil holds a checkpoint of each. Their pids."""
    d.start_vigil()
    pids = {s: d.running_pid(d.agent(s)) for s in SYMBOLS}
    for s in SYMBOLS:
        wait_for(f"a checkpoint of {d.agent(s)} in vigil",
                 lambda s=s: d.checkpoint(d.agent(s))[0] == 200, timeout=30)
    return pids


# ---------------------------------------------------------------------------------------
# What every scenario checks at the end
# ---------------------------------------------------------------------------------------


def assert_decided_once_in_order(d: Deployment, symbol: str) -> List[Dict[str, Any]]:
    """Every tick from the first decided to the last is decided exactly once (the primary key
    makes a repeat impossible; a gap would be a skipped tick), the positions follow from the
    actions, and the exchange got each order once."""
    rows = d.decisions(symbol)
    assert rows, f"no decisions for {symbol}"
    ticks = [r["tick_id"] for r in rows]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), (
        f"{symbol}: ticks skipped: {sorted(set(range(ticks[0], ticks[-1] + 1)) - set(ticks))}"
    )
    position = 0
    for r in rows:
        position += {"buy": 1, "sell": -1, "hold": 0}[r["action"]]
        assert r["position_after"] == position, f"{symbol}: position broken at {r}"
    orders = d.orders(symbol)
    assert not [o for o in orders if o["duplicate"]], f"{symbol}: orders sent twice: {orders}"
    ordered = [o["tick_id"] for o in orders]
    assert len(ordered) == len(set(ordered)), f"{symbol}: two orders for one tick: {ordered}"
    trades = {r["tick_id"]: r for r in rows if r["action"] != "hold"}
    assert set(ordered) <= set(trades), f"{symbol}: orders for ticks that were held"
    for o in orders:
        assert o["side"] == trades[o["tick_id"]]["action"]
    missing = [t for t, r in trades.items() if t not in ordered and r["order_state"] != "pending"]
    assert not missing, f"{symbol}: decisions marked filled without an order: {missing}"
    return rows


def actions_since(
    d: Deployment, agent: str, since_ms: float, *actions: str
) -> List[Dict[str, Any]]:
    """The agent's journal records of ``actions`` written at or after ``since_ms``."""

    def ms(r: Dict[str, Any]) -> float:
        return datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp() * 1000

    return [r for r in d.audit(agent) if r["action"] in actions and ms(r) >= since_ms]


def runs_in_log(text: str) -> List[Tuple[int, List[str]]]:
    """The bot's log split by run: (pid, its lines)."""
    runs: List[Tuple[int, List[str]]] = []
    for line in text.splitlines():
        m = RUN_LINE.search(line)
        if m:
            runs.append((int(m.group(1)), []))
        elif runs:
            runs[-1][1].append(line)
    return runs


def last_logged_tick(text: str) -> int:
    ticks = [int(m.group(1)) for m in TICK_LINE.finditer(text)]
    assert ticks, "the bot logged no decision"
    return max(ticks)


# ---------------------------------------------------------------------------------------
# 1. Crash mid-cycle
# ---------------------------------------------------------------------------------------


def test_crash_mid_cycle_resumes_from_the_checkpoint(deployment: Callable[..., Deployment]) -> None:
    d = deployment()
    symbol = "BTC_USDT"
    agent = d.agent(symbol)
    pid = start_and_trade(d)[symbol]
    # State worth keeping: a position (BTC buys within its first seconds).
    wait_for("a position in the checkpoint",
             lambda: (d.checkpoint(agent)[1] or {}).get("document", {}).get("position", 0) > 0,
             timeout=60)

    # Three crashes: `kill -9` from outside at a random moment of the bot's cycle, then (fault
    # injection, see bot.py) the two windows the resume logic exists for — a trade committed
    # to the table but neither checkpointed nor sent, and an order filled by the exchange but
    # not yet marked filled in the table.
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    kills = ["kill -9", "decision", "order"]
    killed: List[int] = []
    for how in kills:
        decided = len(d.decisions(symbol))
        wait_for(f"{agent} deciding",
                 lambda decided=decided: len(d.decisions(symbol)) >= decided + 3, 30)
        if how == "kill -9":
            time.sleep(rng.uniform(0.0, 0.6))  # anywhere in its half-second cycle
            os.kill(pid, signal.SIGKILL)
        else:
            Path(f"{d.db(symbol)}.fault").write_text(how)  # at its next trade
        killed.append(pid)
        pid = d.running_pid(agent, not_pid=pid, timeout=120)  # vigil restarts it
        wait_for(f"the new run of {agent} resuming",
                 lambda pid=pid: any(p == pid and any(RESUMED_LINE.search(x) for x in lines)
                                     for p, lines in runs_in_log(d.log(agent))), 30)

    decided = len(d.decisions(symbol))
    wait_for("decisions of the last run", lambda: len(d.decisions(symbol)) >= decided + 5, 30)
    rows = assert_decided_once_in_order(d, symbol)

    # Each run resumed where the one killed before it stopped: the state it logged on resuming
    # is that of the killed run's last decision (its checkpoint, plus any decision committed
    # after it — replayed, not decided again), and its first decision is the next tick.
    by_pid: Dict[int, List[Dict[str, Any]]] = {}
    for r in rows:
        by_pid.setdefault(r["pid"], []).append(r)
    runs = dict(runs_in_log(d.log(agent)))
    for how, old, new in zip(kills, killed, killed[1:] + [pid]):
        resumed = next(x for x in runs[new] if RESUMED_LINE.search(x))
        m = RESUMED_LINE.search(resumed)
        assert m is not None
        last_tick, position = int(m.group(1)), int(m.group(2))
        last_of_old = by_pid[old][-1]
        context = f"{how} (seed {seed}): run {new} after run {old}: {resumed}"
        assert last_tick == last_of_old["tick_id"], context
        assert position == last_of_old["position_after"], context
        assert by_pid[new][0]["tick_id"] == last_tick + 1, context
        if how == "decision":
            # The trade was in the table, not in the checkpoint: replayed, and its order (fate
            # unknown) looked up on the exchange, then sent — once.
            assert last_of_old["action"] != "hold", context
            assert "1 decision(s) past it replayed, 1 order(s) to confirm" in resumed, context
        if how == "order":
            # The exchange had filled it: found there, not sent again.
            assert "0 decision(s) past it replayed, 1 order(s) to confirm" in resumed, context
            assert any("was filled before the restart" in x for x in runs[new]), context
    for o in d.orders(symbol):  # (assert_decided_once_in_order: no order twice)
        assert not o["duplicate"]

    # vigil saw three crashes and restarted each: no stall, nothing else.
    records = d.audit(agent)
    exits = [r for r in records if r["action"] == "exit"]
    assert len(exits) == 3 and all("SIGKILL" in r["reason"] for r in exits), exits
    assert len([r for r in records if r["action"] == "restart"]) == 3
    assert not [r for r in records if r["action"] == "stalled"]
    # And vigil's checkpoint went on from the resumed state.
    wait_for("vigil's checkpoint of the last run",
             lambda: d.checkpoint(agent)[1]["document"]["last_tick"] >= rows[-1]["tick_id"], 10)
    assert "IntegrityError" not in d.log(agent)


# ---------------------------------------------------------------------------------------
# 2. vigil down for a minute (its checkpoint store too, with PostgreSQL)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_vigil_down_for_a_minute_checkpoints_resync(
    deployment: Callable[..., Deployment], store: str
) -> None:
    proxy: Optional[TcpProxy] = None
    store_url = None
    if store == "postgres":
        if not POSTGRES_URL:
            pytest.skip("set VIGIL_TEST_POSTGRES_URL=postgres://USER@HOST:PORT/DB to run the "
                        "PostgreSQL variant (the store is made unreachable through a TCP proxy)")
        u = urlsplit(POSTGRES_URL)
        proxy = TcpProxy((u.hostname or "127.0.0.1", u.port or 5432))
        proxy.start()
        userinfo = u.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{proxy.port}"
        store_url = urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))
    d = deployment(store_url)
    try:
        _vigil_down(d, proxy)
    finally:
        if proxy is not None:
            proxy.stop()
            _forget_checkpoints(POSTGRES_URL or "", d.template)


def _vigil_down(d: Deployment, proxy: Optional[TcpProxy]) -> None:
    agents = [d.agent(s) for s in SYMBOLS]
    pids = start_and_trade(d)

    d.kill_vigil()
    if proxy is not None:
        proxy.stop()  # and the checkpoint store with it
    outage_started = time.monotonic()
    for s, a in zip(SYMBOLS, agents):
        assert alive(pids[s]), f"{a} died with vigil"
    # The bots trade on, and keep their checkpoints in the local file, marked pending.
    for a in agents:
        wait_for(f"{a}'s local checkpoint pending",
                 lambda a=a: (d.local_checkpoint(a) or {}).get("pending") is True, timeout=30)
    # The version of vigil's each pending copy is built on (the last vigil took).
    base = {a: (d.local_checkpoint(a) or {})["version"] for a in agents}
    logged_at_kill = {a: last_logged_tick(d.log(a)) for a in agents}
    while time.monotonic() - outage_started < OUTAGE_S:  # the outage itself
        time.sleep(min(5.0, max(0.0, OUTAGE_S - (time.monotonic() - outage_started))))
        for s, a in zip(SYMBOLS, agents):
            assert alive(pids[s]), f"{a} died while vigil was down:\n{d.log(a)[-3000:]}"
    # The last tick each bot logged before vigil is back: vigil must end up with it at least.
    logged = {a: last_logged_tick(d.log(a)) for a in agents}
    for a in agents:
        assert logged[a] >= logged_at_kill[a] + OUTAGE_S, f"{a} did not trade on: {logged}"
        local = d.local_checkpoint(a) or {}
        assert local.get("pending") is True and local["state"]["last_tick"] >= logged_at_kill[a]

    restarted_at_ms = time.time() * 1000
    d.start_vigil()
    if proxy is not None:
        # vigil is back, its store is not: it supervises as before, checkpoints get 503, and
        # the bots go on saving to the local copy (pending, and newer than vigil's return).
        for s, a in zip(SYMBOLS, agents):
            wait_for(f"{a} adopted", lambda a=a, s=s: d.status(a).get("pid") == pids[s], 30)
            assert d.checkpoint(a)[0] == 503, d.checkpoint(a)
            wait_for(f"{a} saving locally against the unreachable store",
                     lambda a=a: (d.local_checkpoint(a) or {}).get("pending") is True
                     and (d.local_checkpoint(a) or {})["saved_at"] * 1000
                     > restarted_at_ms + 1000, 30)
        proxy.start()

    for s, a in zip(SYMBOLS, agents):
        def caught_up(a: str = a) -> Optional[Dict[str, Any]]:
            status, body = d.checkpoint(a)
            if status == 200 and body["document"]["last_tick"] >= logged[a]:
                return dict(body)
            return None

        wait_for(f"vigil's checkpoint of {a} at tick {logged[a]} or later", caught_up, 60)
        # The copy saved while vigil was away went in as the very next version after the one
        # it was built on, with everything the bot had logged: nothing dropped, nothing
        # overwritten unseen.
        history = d.get(f"/agents/{quote(a)}/checkpoints?limit=100")["checkpoints"]
        by_version = {c["version"]: c["document"] for c in history}
        assert base[a] + 1 in by_version, (base[a], sorted(by_version))
        assert by_version[base[a] + 1]["last_tick"] >= logged[a]
        newer = sorted(v for v in by_version if v > base[a])
        assert newer == list(range(base[a] + 1, newer[-1] + 1)), newer
        wait_for(f"{a}'s local copy in step", lambda a=a: (d.local_checkpoint(a) or {}).get(
            "pending") is False, 10)
        # Adopted, not restarted: the same process all along.
        assert d.status(a)["pid"] == pids[s]
        records = actions_since(d, a, restarted_at_ms, "adopted", "restart", "stalled", "exit")
        assert [r["action"] for r in records] == ["adopted"], records
        assert_decided_once_in_order(d, s)


def _forget_checkpoints(url: str, template: str) -> None:
    """Remove this test's rows from the shared PostgreSQL (best effort: needs psql)."""
    psql = shutil.which("psql")
    if psql and url:
        subprocess.run(
            [psql, url, "-qc", f"DELETE FROM vigil_checkpoints WHERE agent LIKE '{template}@%'"],
            capture_output=True, timeout=30, check=False,
        )


# ---------------------------------------------------------------------------------------
# 3. The exchange answers 429 for two minutes
# ---------------------------------------------------------------------------------------


def test_rate_limit_storm_is_waited_out_without_restarts(
    deployment: Callable[..., Deployment]
) -> None:
    d = deployment()
    agents = [d.agent(s) for s in SYMBOLS]
    pids = start_and_trade(d)
    # The storm must be shorter than what the config lets a degradation hold off a restart.
    max_degraded = re.search(r'max_degraded\s*=\s*"(\d+)m"', (d.app / "vigil.toml").read_text())
    assert max_degraded and RATE_LIMIT_S < int(max_degraded.group(1)) * 60 - 30, (
        "SCENARIO_RATE_LIMIT_S must stay below vigil.toml's max_degraded"
    )

    for s in SYMBOLS:  # trading for a while, past the checks' grace period
        wait_for(f"{s} trading", lambda s=s: len(d.decisions(s)) >= 30, timeout=60)

    storm_started_ms = time.time() * 1000
    d.exchange_admin("rate-limit", RATE_LIMIT_S)
    storm_ends = time.monotonic() + RATE_LIMIT_S

    # The breaker opens and each bot says so: degraded, with an `until`, on the record.
    for a in agents:
        status = wait_for(
            f"{a} degraded, its breaker open",
            lambda a=a: (d.status(a).get("degraded") or {}).get("reason")
            == "circuit breaker exchange open" and d.status(a),
            timeout=30,
        )
        assert status["degraded"]["stall_checks_suspended_until"]
        declared = [r for r in actions_since(d, a, storm_started_ms, "degraded")
                    if "suspended_stall" not in r["metadata"]]
        assert declared and declared[0]["metadata"]["until_ms"] > storm_started_ms, declared
    # Its heartbeats stopped: without the declaration vigil WOULD restart it. It records the
    # stall it did not act on.
    for a in agents:
        wait_for(f"{a}'s stall not acted on",
                 lambda a=a: [r for r in actions_since(d, a, storm_started_ms, "degraded")
                              if r["metadata"].get("suspended_stall")], timeout=30)

    # All through the storm: the same processes, degraded, not deciding, never restarted.
    while time.monotonic() < storm_ends - 2:
        for s, a in zip(SYMBOLS, agents):
            st = d.status(a)
            assert st["state"] == "running" and st["pid"] == pids[s], st
            assert st.get("degraded"), f"{a} not degraded during the storm: {st}"
            bad = actions_since(d, a, storm_started_ms, "restart", "stalled", "exit",
                                "degraded_ended")
            assert not bad, bad
        time.sleep(min(2.0, max(0.1, storm_ends - 2 - time.monotonic())))
    for s in SYMBOLS:
        during = [r for r in d.decisions(s)
                  if storm_started_ms / 1000 + 5 < r["decided_at"] < time.time() - 1]
        assert not during, f"{s} decided during the storm: {during[:3]}"

    # The exchange recovers: the bots decide again, catch up, and declare themselves ok.
    recovered_at = time.time()
    for s, a in zip(SYMBOLS, agents):
        wait_for(f"{s} deciding again",
                 lambda s=s: [r for r in d.decisions(s) if r["decided_at"] > recovered_at],
                 timeout=60)
        ended = wait_for(f"{a} declared ok",
                         lambda a=a: actions_since(d, a, storm_started_ms, "degraded_ended"),
                         timeout=30)
        assert "declared itself ok" in ended[0]["reason"], ended
        wait_for(f"{a} no longer degraded", lambda a=a: not d.status(a).get("degraded"), 10)
        wait_for(f"{a}'s check passing",
                 lambda a=a: d.status(a)["checks"][0]["verdict"] == "ok", 10)
    # Caught up: the ticks published during the storm were decided after it, none skipped.
    for s, a in zip(SYMBOLS, agents):
        wait_for(f"{s} caught up",
                 lambda s=s: d.decisions(s)[-1]["ts"] / 1000 > time.time() - 5, timeout=60)
        rows = assert_decided_once_in_order(d, s)
        assert any(storm_started_ms < r["ts"] < storm_started_ms + RATE_LIMIT_S * 1000 - 5000
                   for r in rows), f"{s}: the storm's ticks were not decided afterwards"
        assert d.status(a)["pid"] == pids[s]
        bad = actions_since(d, a, storm_started_ms, "restart", "stalled", "exit")
        assert not bad, bad
