"""A real vigil for the tests: started as a subprocess on a config written per test.

The binary is ``$VIGIL_BIN``, else ``../../target/debug/vigil`` relative to this directory.
Every vigil a test starts is shut down (then killed) when the test ends, pass or fail, and
so is every agent process it ever reported.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

import pytest

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
VIGIL_BIN = Path(
    os.environ.get("VIGIL_BIN") or HERE / ".." / ".." / ".." / "target" / "debug" / "vigil"
).resolve()

# The library under test, for the tests' own process too.
sys.path.insert(0, str(SRC))

#: Names of the environment variables vigil sets for its runs: a test's own environment must
#: not leak them into vigil (VIGIL_STATE_DIR would even override its state dir).
VIGIL_VARS = (
    "VIGIL_URL",
    "VIGIL_AGENT",
    "VIGIL_AGENT_TOKEN",
    "VIGIL_STATE_DIR",
    "VIGIL_CHECKPOINT_DIR",
    "VIGIL_CONFIG",
    "VIGIL_TOKEN",
    "VIGIL_RUN",
    "VIGIL_INSTANCE",
    "NOTIFY_SOCKET",
)

#: Put at the top of every agent script: imports the client, and `emit`/`wait_for_file`.
AGENT_PRELUDE = f"""
import json, os, sys, time
sys.path.insert(0, {str(SRC)!r})
import logging
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.jsonl")

def emit(key, value=None):
    with open(RESULTS, "a") as f:
        f.write(json.dumps({{"key": key, "value": value, "run": os.environ.get("VIGIL_RUN"),
                            "pid": os.getpid()}}) + "\\n")
        f.flush()

def wait_for_file(name, timeout=60):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            emit("timeout", name)
            sys.exit(3)
        time.sleep(0.02)

import vigil_agent
"""


def wait_for(
    what: str, predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - polled again until the deadline
            last_error = e
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in VIGIL_VARS}
    env.update(extra or {})
    return env


class Vigil:
    """One vigil on a temporary directory, and helpers to read its API and its agents' output."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_dir = root / "state"
        self.config = root / "vigil.toml"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None
        self.agent_pids: Set[int] = set()
        self._outputs: List[Path] = []

    # -- set-up ---------------------------------------------------------------------------

    def write_config(self, agents: Dict[str, Dict[str, Any]]) -> None:
        """``agents``: name → {"script": source, "checks": [{"kind": ..., ...}], "env": {...}}."""
        lines = [
            "[vigil]",
            f'state_dir = "{self.state_dir}"',
            "[api]",
            f'listen = "127.0.0.1:{self.port}"',
            "[defaults.policy]",
            'cooldown = "1s"',
        ]
        for name, spec in agents.items():
            workdir = self.root / name
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / "bot.py").write_text(AGENT_PRELUDE + spec["script"])
            lines += [
                f"[agents.{name}]",
                f'command = ["{sys.executable}", "{workdir / "bot.py"}"]',
                f'cwd = "{workdir}"',
                'stop_timeout = "3s"',
            ]
            env = spec.get("env")
            if env:
                inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items())
                lines.append(f"env = {{ {inner} }}")
            for check in spec.get("checks", []):
                lines.append(f"[[agents.{name}.checks]]")
                for k, v in check.items():
                    lines.append(f"{k} = {json.dumps(v)}")
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        """Start vigil and wait until its API answers."""
        out = self.root / f"vigil-{len(self._outputs)}.out"
        self._outputs.append(out)
        with open(out, "wb") as f:
            self.proc = subprocess.Popen(
                [str(VIGIL_BIN), "run", "-c", str(self.config)],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=clean_env(),
                cwd=self.root,
            )
        wait_for("vigil's API", lambda: self._alive_and_answering(), timeout=20)

    def _alive_and_answering(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"vigil exited with {self.proc.returncode}: {self.output()}")
        return self.get("/health") is not None

    # -- the API ---------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, headers: Optional[Dict[str, str]] = None
    ):
        """(status, parsed JSON body) — no token: with no `[api] token`, a request without
        one acts as a person."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=5) as res:
                raw = res.read()
                return res.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def get(self, path: str) -> Any:
        """The JSON at ``path`` (None when vigil cannot be reached)."""
        try:
            status, body = self.request("GET", path)
        except (urllib.error.URLError, OSError):
            return None
        return body if status < 500 else None

    def status(self, agent: str) -> Dict[str, Any]:
        s = self.get(f"/status/{agent}") or {}
        if s.get("pid"):
            self.agent_pids.add(int(s["pid"]))
        return s

    def audit(self, agent: str) -> List[Dict[str, Any]]:
        return (self.get(f"/audit?agent={agent}") or {}).get("records", [])

    def running_pid(self, agent: str, not_pid: Optional[int] = None) -> int:
        """Wait for the agent to run (with a pid other than ``not_pid``); its pid."""

        def check() -> Optional[int]:
            s = self.status(agent)
            pid = s.get("pid")
            if s.get("state") == "running" and pid and pid != not_pid:
                return int(pid)
            return None

        return wait_for(f"{agent} running", check)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(VIGIL_BIN), *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=30,
            cwd=self.root,
        )

    # -- what the agents wrote -------------------------------------------------------------

    def results(self, agent: str) -> List[Dict[str, Any]]:
        path = self.root / agent / "results.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
        for r in out:
            self.agent_pids.add(int(r["pid"]))
        return out

    def result(self, agent: str, key: str, timeout: float = 20.0, nth: int = 0) -> Dict[str, Any]:
        """Wait for the agent's ``nth`` result called ``key`` (failing fast on its timeouts)."""

        def find() -> Optional[Dict[str, Any]]:
            rs = self.results(agent)
            for r in rs:
                if r["key"] == "timeout" or r["key"] == "error":
                    raise AssertionError(f"{agent} reported {r}; its log:\n{self.agent_log(agent)}")
            hits = [r for r in rs if r["key"] == key]
            return hits[nth] if len(hits) > nth else None

        try:
            return wait_for(f"{agent}'s result {key!r}", find, timeout=timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- {agent}'s log ---\n{self.agent_log(agent)}") from None

    def go(self, agent: str, name: str) -> None:
        """Create the file an agent waits for (`wait_for_file(name)`)."""
        (self.root / agent / name).write_text("go")

    def agent_log(self, agent: str) -> str:
        path = self.state_dir / "logs" / f"{agent}.log"
        return path.read_text(errors="replace") if path.exists() else "(no log)"

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self._outputs if p.exists())

    # -- ending ----------------------------------------------------------------------------

    def kill_vigil(self) -> None:
        """SIGKILL vigil alone: its agents live on (by design), to be adopted by the next one."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def shutdown(self) -> None:
        """Stop vigil gracefully (and its agents); kill it if that does not work."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.cli("shutdown")
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, OSError):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        try:
            self.shutdown()
        finally:
            for pid in self.agent_pids:
                if _is_ours(pid, self.root):
                    _kill_group(pid)


def _is_ours(pid: int, root: Path) -> bool:
    """Whether ``pid`` is still a process of this test (its command names the test's dir)."""
    try:
        return str(root).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _kill_group(pid: int) -> None:
    """Kill an agent that outlived its vigil (each agent leads its own process group)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def vigil(tmp_path: Path):
    """A factory-free `Vigil`: write its config with `write_config`, then `start()`."""
    if not VIGIL_BIN.exists():
        pytest.skip(f"no vigil binary at {VIGIL_BIN} (set VIGIL_BIN)")
    v = Vigil(tmp_path)
    try:
        yield v
    finally:
        v.cleanup()


@pytest.fixture(autouse=True)
def _fresh_client_state(monkeypatch: pytest.MonkeyPatch):
    """Tests in this process start outside vigil, with a fresh default client."""
    for name in VIGIL_VARS:
        monkeypatch.delenv(name, raising=False)
    import vigil_agent
    from vigil_agent import client as client_module

    vigil_agent.set_default_client(None)
    client_module._warned.clear()
    yield
    vigil_agent.set_default_client(None)
