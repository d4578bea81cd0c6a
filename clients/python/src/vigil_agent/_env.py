"""What vigil puts in the environment of every run it starts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

#: A file system path, as str or path object.
PathLike = Union[str, "os.PathLike[str]"]

#: Where the API is, e.g. ``http://127.0.0.1:9120``.
URL_VAR = "VIGIL_URL"
#: The agent's name, e.g. ``bot`` or ``trader@BTC_USDT``.
AGENT_VAR = "VIGIL_AGENT"
#: The run's own bearer token (``vat_…``), valid while this run lives.
TOKEN_VAR = "VIGIL_AGENT_TOKEN"
#: vigil's state dir.
STATE_DIR_VAR = "VIGIL_STATE_DIR"
#: The notify socket (a path, or ``@name`` for an abstract socket); only with a notify check.
NOTIFY_VAR = "NOTIFY_SOCKET"
#: Overrides where checkpoints' local files go.
CHECKPOINT_DIR_VAR = "VIGIL_CHECKPOINT_DIR"

#: The local checkpoint directory when nothing else names one (relative to the working dir).
FALLBACK_CHECKPOINT_DIR = ".vigil-checkpoints"


@dataclass(frozen=True)
class Environment:
    """The vigil variables of one environment (empty values count as unset)."""

    url: Optional[str] = None
    agent: Optional[str] = None
    token: Optional[str] = field(default=None, repr=False)  # never shown
    notify_socket: Optional[str] = None
    state_dir: Optional[str] = None
    checkpoint_dir: Optional[str] = None

    @classmethod
    def read(cls, environ: Optional[Mapping[str, str]] = None) -> Environment:
        env = os.environ if environ is None else environ

        def get(name: str) -> Optional[str]:
            value = env.get(name)
            return value if value else None

        return cls(
            url=get(URL_VAR),
            agent=get(AGENT_VAR),
            token=get(TOKEN_VAR),
            notify_socket=get(NOTIFY_VAR),
            state_dir=get(STATE_DIR_VAR),
            checkpoint_dir=get(CHECKPOINT_DIR_VAR),
        )


def checkpoint_directory(
    checkpoint_dir: Optional[PathLike] = None, state_dir: Optional[PathLike] = None
) -> Path:
    """Where local checkpoint files go: ``checkpoint_dir``, else ``<state_dir>/agent-checkpoints``,
    else ``./.vigil-checkpoints``."""
    if checkpoint_dir:
        return Path(checkpoint_dir)
    if state_dir:
        return Path(state_dir) / "agent-checkpoints"
    return Path(FALLBACK_CHECKPOINT_DIR)
