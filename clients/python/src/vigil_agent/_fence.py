"""Exclusive placement: is this run still the one allowed to act?

An agent with ``placement = "exclusive"`` runs on one node of a vigil cluster at a time, the
node holding its lease. vigil stops it before that lease can lapse — but a vigil that is
itself dead cannot stop anything, and agents outlive vigil by design. So vigil also keeps
the lease's end in a small file (``VIGIL_FENCE_FILE``), rewritten at every renewal, and the
run's fencing epoch in ``VIGIL_FENCE``. Before each action that must never happen twice
(an order), the agent asks :func:`fence_ok`: once the lease lapsed — or another node took
it, at a higher epoch — the answer is ``False`` and the agent must stop acting.

The deadline is on ``CLOCK_BOOTTIME`` (no one can set it; it counts a suspended machine's
sleep), tied to this boot: a file left from before a reboot is never valid.
"""

from __future__ import annotations

import json
import os
import time
from typing import Mapping, Optional

#: The fencing epoch the run was started under (an integer, only ever growing per agent).
FENCE_VAR = "VIGIL_FENCE"
#: The file holding the lease's end.
FENCE_FILE_VAR = "VIGIL_FENCE_FILE"

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def fence_epoch(environ: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """The run's fencing epoch (``VIGIL_FENCE``), or ``None`` when the agent is not exclusive.

    Put it in the writes that must be fenced, e.g. ``UPDATE ... WHERE fence <= %s`` on a row
    that keeps the highest epoch seen: a write from an older run is then refused.
    """
    env = os.environ if environ is None else environ
    value = env.get(FENCE_VAR)
    try:
        return int(value) if value else None
    except ValueError:
        return None


def fence_ok(environ: Optional[Mapping[str, str]] = None) -> bool:
    """May this run act now? ``True`` for an agent that is not exclusive (nothing to fence).

    For an exclusive agent: ``True`` only while its lease file names this run's epoch, this
    boot, and a deadline still ahead. Any doubt (no file, an unreadable one, another epoch)
    is ``False``: the safe answer when the question is "could another copy be acting?".
    Cheap (one small file read): call it before every action that must not happen twice.
    """
    env = os.environ if environ is None else environ
    path = env.get(FENCE_FILE_VAR)
    if not path:
        return True
    epoch = fence_epoch(env)
    try:
        with open(path, "rb") as f:
            lease = json.loads(f.read(4096))
        with open(_BOOT_ID, "r", encoding="ascii") as f:
            boot_id = f.read().strip()
    except (OSError, ValueError):
        return False
    if not isinstance(lease, dict) or epoch is None:
        return False
    until = lease.get("valid_until_boottime_ms")
    if lease.get("epoch") != epoch or lease.get("boot_id") != boot_id:
        return False
    if not isinstance(until, int) or isinstance(until, bool):
        return False
    now_ms = time.clock_gettime(time.CLOCK_BOOTTIME) * 1000
    return now_ms < until
