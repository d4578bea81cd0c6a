"""vigil's checkpoint endpoints for one agent: ``PUT`` and ``GET /agents/NAME/checkpoint``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from ._http import HttpTransport
from ._timeutil import parse_rfc3339
from .errors import VigilError, VigilUnavailable

#: Checkpoint requests may take longer than signs of life: vigil syncs them to disk first.
CHECKPOINT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Stored:
    """A version vigil has taken: its number and when (unix seconds)."""

    version: int
    ts: float


@dataclass(frozen=True)
class Remote:
    """vigil's latest checkpoint of the agent."""

    version: int
    ts: float
    document: Any


class Conflict(Exception):
    """The write's precondition failed: vigil holds ``current`` (``None``: nothing)."""

    def __init__(self, current: Optional[int]) -> None:
        super().__init__(current)
        self.current = current


class CheckpointApi:
    """The agent's checkpoint on one vigil.

    Methods raise :class:`~vigil_agent.errors.VigilUnavailable` when vigil cannot be reached
    (see :class:`~vigil_agent._http.HttpTransport`) and :class:`VigilError` when it refuses
    the request for another reason.
    """

    def __init__(self, transport: HttpTransport, timeout: float = CHECKPOINT_TIMEOUT) -> None:
        self.transport = transport
        self.timeout = timeout

    def put(self, document: str, expect: int) -> Stored:
        """Write ``document`` (JSON text) if vigil's latest version is still ``expect``
        (0: vigil has none yet). Raises :class:`Conflict` if it is not."""
        t = self.transport
        answer = t.request(
            "PUT",
            t.agent_path("checkpoint"),
            document.encode("utf-8"),
            headers={"If-Match": str(expect)},
            timeout=self.timeout,
        )
        data = answer.json()
        body = data if isinstance(data, dict) else {}
        if answer.status == 412:
            current = _version(body.get("current_version"))
            if current is None:
                current = _etag_version(answer.headers.get("ETag"))
            raise Conflict(current)
        if answer.status not in (200, 201):
            raise VigilError(
                f"vigil refused the checkpoint ({answer.status}: {answer.error_text()})",
                answer.status,
            )
        # vigil sends the version as the ETag, and in the body: either will do.
        version = _etag_version(answer.headers.get("ETag"))
        if version is None:
            version = _version(body.get("version"))
        if version is None:
            # Taken, but as which version is not known: as a save that got no answer
            # (kept pending; the next save or load() finds it in vigil), as the Rust
            # client does.
            raise VigilUnavailable(
                f"vigil took the checkpoint ({answer.status}) but did not say its version",
                answer.status,
            )
        return Stored(version=version, ts=_ts(body.get("ts")))

    def get(self) -> Optional[Remote]:
        """vigil's latest version; ``None`` when the agent has none yet.

        vigil says "none yet" with a 404 whose body has ``"checkpoint": null``; any other 404
        is an agent it does not know, and raises :class:`VigilError`.
        """
        t = self.transport
        answer = t.request("GET", t.agent_path("checkpoint"), timeout=self.timeout)
        data = answer.json()
        if answer.status == 404 and isinstance(data, dict):
            if "checkpoint" in data and data["checkpoint"] is None:
                return None
        if answer.status != 200 or not isinstance(data, dict) or "document" not in data:
            raise VigilError(
                f"vigil did not give the checkpoint ({answer.status}: {answer.error_text()})",
                answer.status,
            )
        return Remote(
            version=int(data["version"]), ts=_ts(data.get("ts")), document=data["document"]
        )


def _version(value: Any) -> Optional[int]:
    """A version from a JSON field (an integer; not ``true``)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _etag_version(value: Optional[str]) -> Optional[int]:
    """The version an ``ETag`` header names (``"7"``, or ``W/"7"``); ``None`` without one."""
    if not value:
        return None
    tag = value.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    tag = tag.strip('"')
    return int(tag) if tag.isascii() and tag.isdigit() else None


def _ts(value: Any) -> float:
    try:
        return parse_rfc3339(value) if isinstance(value, str) else 0.0
    except ValueError:
        return 0.0


def same_document(a: str, b: Any) -> bool:
    """Whether JSON text ``a`` and the parsed document ``b`` are the same state.

    Strictly, as JSON values (as the Rust client compares them): ``true`` is not ``1`` and
    ``1.0`` is not ``1``, which Python's ``==`` would take for equal; key order does not count.
    """
    try:
        return _canonical(json.loads(a)) == _canonical(b)
    except (ValueError, TypeError):
        return False


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
