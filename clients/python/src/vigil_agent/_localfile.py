"""A checkpoint's local file: the copy that survives when vigil is out of reach.

One JSON file per checkpoint, replaced whole on every write: written to a temporary file in
the same directory, flushed and fsynced, renamed over the old one (``os.replace`` is atomic),
and the directory fsynced so the rename itself survives a power cut. A reader sees the old
file or the new one, never half of one.

The file says whether vigil has this state already (``version``) or not yet (``pending``,
with the version it was built on, which decides what happens when vigil is back; the time
it was saved at is for people, and never compared with vigil's). Its layout and name are
those of the Rust client (``crates/vigil-agent``), so either can pick up the other's copy::

    {"agent": "bot", "version": 7, "pending": false, "saved_at": 1796077590.12, "state": {...}}

``version`` is vigil's version of this state, or, when ``pending``, the version it was built
on; 0 for none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger("vigil_agent")

_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")


def file_name(name: str) -> str:
    """The local file's name for the checkpoint called ``name`` (``trader@BTC_USDT`` →
    ``trader@BTC_USDT.json``): agent names' own characters are kept, any other becomes
    ``_``, leading dots are dropped, and a very long name is shortened with a hash."""
    safe = _UNSAFE.sub("_", name).lstrip(".") or "_"
    if len(safe) > 150:
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
        safe = f"{safe[:120]}-{digest}"
    return safe + ".json"


@dataclass(frozen=True)
class LocalCopy:
    """What the local file holds.

    Attributes:
        document: the state, as JSON text.
        saved_at: when the state was saved (unix seconds).
        version: vigil's version of this very state, when vigil has it.
        pending: vigil does not have it yet: it is sent when vigil is back.
        base_version: the version of vigil's that it was built on (0: none), when pending.
        agent: the agent (or, outside vigil, the checkpoint name) it belongs to.
    """

    document: str
    saved_at: float
    version: Optional[int] = None
    pending: bool = False
    base_version: int = 0
    agent: Optional[str] = None

    def state(self) -> Any:
        """The state, as a new object."""
        return json.loads(self.document)


class LocalFile:
    """The local file of one checkpoint, at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> Optional[LocalCopy]:
        """The copy in the file; ``None`` when there is none (or it is unreadable: logged)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("cannot read the local checkpoint %s: %s", self.path, e)
            return None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or "state" not in data:
                raise ValueError("not a vigil-agent checkpoint file")
            version = int(data.get("version") or 0)
            pending = data.get("pending") is True
            return LocalCopy(
                document=json.dumps(data["state"], ensure_ascii=False, separators=(",", ":")),
                saved_at=float(data["saved_at"]),
                version=None if pending or version == 0 else version,
                pending=pending,
                base_version=version if pending else 0,
                agent=data.get("agent"),
            )
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignoring the local checkpoint %s, which is damaged (%s)", self.path, e)
            return None

    def write(self, copy: LocalCopy) -> None:
        """Replace the file with ``copy``, atomically and durably (raises ``OSError``)."""
        header = {
            "agent": copy.agent,
            "version": copy.base_version if copy.pending else (copy.version or 0),
            "pending": copy.pending,
            "saved_at": copy.saved_at,
        }
        # The state goes in as the JSON text it is, not parsed and written again.
        text = json.dumps(header, ensure_ascii=False)[:-1] + ', "state": ' + copy.document + "}\n"
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
