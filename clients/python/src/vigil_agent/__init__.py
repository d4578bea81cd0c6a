"""vigil-agent: the Python client for agents supervised by vigil.

vigil runs long-lived agents (trading bots, workers), restarts them when they crash or
stall, and keeps their checkpoints. This package is what an agent uses to talk back::

    import vigil_agent

    state = vigil_agent.Checkpoint().load() or {}
    vigil_agent.ready()                     # started up
    while True:
        trade(state)
        vigil_agent.heartbeat()             # alive: resets the stall check
        vigil_agent.Checkpoint().save(state)

* Signs of life: :func:`ready`, :func:`heartbeat`, :func:`progress`, :func:`status`.
* Declared state: :func:`degraded` (e.g. rate-limited: don't restart me) and :func:`ok`.
* State that survives restarts: :class:`Checkpoint`.
* Retry and circuit-breaker libraries: :mod:`vigil_agent.adapters`.
* Exclusive agents (one node of a cluster at a time): :func:`fence_ok` before each action
  that must never happen twice, and :func:`fence_epoch` for fencing one's own writes.

Everything reads what vigil put in the environment (``VIGIL_URL``, ``VIGIL_AGENT``,
``VIGIL_AGENT_TOKEN``, ``NOTIFY_SOCKET``). Outside vigil every call is a harmless no-op (one
warning is logged, to the ``vigil_agent`` logger) and checkpoints live in a local file, so
the bot can be run by hand unchanged.
"""

from __future__ import annotations

import threading
from typing import Optional

from ._timeutil import Until
from .checkpoint import MAX_DOCUMENT, Checkpoint
from .client import Client
from ._fence import fence_epoch, fence_ok
from .errors import CheckpointConflict, VigilError, VigilUnavailable

__all__ = [
    "Checkpoint",
    "CheckpointConflict",
    "Client",
    "MAX_DOCUMENT",
    "Until",
    "VigilError",
    "VigilUnavailable",
    "default_client",
    "degraded",
    "fence_epoch",
    "fence_ok",
    "heartbeat",
    "ok",
    "progress",
    "ready",
    "set_default_client",
    "status",
]

__version__ = "0.1.0"

_default: Optional[Client] = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The client the module-level functions use: built from the environment at first use."""
    global _default
    client = _default
    if client is None:
        with _default_lock:
            if _default is None:
                _default = Client.from_env()
            client = _default
    return client


def set_default_client(client: Optional[Client]) -> None:
    """Make ``client`` the one the module-level functions use (``None``: build it again from
    the environment at the next call)."""
    global _default
    with _default_lock:
        _default = client


def ready() -> None:
    """Tell vigil the agent has started up (``READY=1`` on the notify socket)."""
    (_default or default_client()).ready()


def heartbeat() -> None:
    """A sign of life: resets the agent's stall check. Cheap: call it from the main loop."""
    (_default or default_client()).heartbeat()


def progress(note: Optional[str] = None) -> None:
    """The agent made progress: a heartbeat, with ``note`` as its status text if given."""
    (_default or default_client()).progress(note)


def status(text: str) -> None:
    """A one-line status for ``vigil status`` and the dashboard (needs a notify socket)."""
    (_default or default_client()).status(text)


def degraded(reason: str, until: Until = None) -> None:
    """Declare the agent degraded on purpose (rate-limited, breaker open…) until ``until``.

    vigil then does not restart it for stalling (up to the policy's ``max_degraded``).
    ``until``: a ``datetime``, a ``timedelta``, seconds from now, or ``None``. See
    :meth:`Client.degraded`.
    """
    (_default or default_client()).degraded(reason, until)


def ok() -> None:
    """Declare the agent back to normal after :func:`degraded`."""
    (_default or default_client()).ok()
