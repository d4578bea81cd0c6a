"""A bot run by hand (no vigil in its environment) runs unchanged: calls do nothing, one warning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import SRC, clean_env

SCRIPT = f"""
import sys, json, datetime
sys.path.insert(0, {str(SRC)!r})
import vigil_agent
for _ in range(3):
    vigil_agent.ready()
    vigil_agent.heartbeat()
    vigil_agent.progress("step")
    vigil_agent.status("fine")
    vigil_agent.degraded("exchange 429", until=30)
    vigil_agent.degraded("exchange 429", until=datetime.timedelta(seconds=30))
    vigil_agent.ok()
cp = vigil_agent.Checkpoint()
first = cp.load()
saved = cp.save({{"n": 1}})
again = vigil_agent.Checkpoint().load()
in_vigil = vigil_agent.default_client().in_vigil
print(json.dumps({{"first": first, "saved": saved, "again": again, "in_vigil": in_vigil,
                  "path": str(cp.path)}}))
"""


def test_outside_vigil_every_call_is_a_no_op_with_one_warning(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {
        "first": None,
        "saved": None,
        "again": {"n": 1},
        "in_vigil": False,
        "path": ".vigil-checkpoints/checkpoint.json",
    }
    assert (tmp_path / ".vigil-checkpoints" / "checkpoint.json").exists()
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "Not running under vigil" in lines[0]


def test_checkpoint_dir_from_the_environment(tmp_path: Path) -> None:
    env = clean_env(
        {"VIGIL_CHECKPOINT_DIR": str(tmp_path / "cps"), "VIGIL_AGENT": "trader@BTC_USDT"}
    )
    script = (
        f"import sys; sys.path.insert(0, {str(SRC)!r}); import vigil_agent; "
        "print(vigil_agent.Checkpoint().path)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.stdout.strip() == str(tmp_path / "cps" / "trader@BTC_USDT.json")
