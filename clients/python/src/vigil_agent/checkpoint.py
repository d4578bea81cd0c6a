"""Checkpoints: the agent's own state, kept by vigil so that a restarted agent resumes.

vigil keeps one checkpoint per agent, versioned (1, 2, 3 …) and written compare-and-swap:
a save names the version it was built on, and vigil refuses it if another writer came
first. Every save also leaves a local copy in a file, which carries the state through the
moments vigil cannot be reached:

* vigil unreachable → :meth:`Checkpoint.save` writes the local file (atomically, durably),
  marked *pending*, and returns ``None``; it does not raise;
* vigil back → the next :meth:`~Checkpoint.save` or :meth:`~Checkpoint.load` sends the
  pending copy first. If vigil took a newer version in the meantime, the newer of the two
  (by wall time) wins: a newer pending copy is written on top, an older one is dropped. No
  newer version is ever overwritten unseen, and every version stays in vigil's history.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Optional

from ._checkpoint_api import CheckpointApi, Conflict, Remote, same_document
from ._env import Environment, PathLike, checkpoint_directory
from ._localfile import LocalCopy, LocalFile, file_name
from ._timeutil import format_rfc3339
from .client import Client
from .errors import CheckpointConflict, VigilUnavailable

log = logging.getLogger("vigil_agent")

__all__ = ["Checkpoint", "MAX_DOCUMENT"]

#: The largest checkpoint vigil takes: 1 MiB of JSON.
MAX_DOCUMENT = 1024 * 1024

#: Name of the local file when neither a name nor the agent's name is known.
DEFAULT_NAME = "checkpoint"

# What became of a pending local copy when it was sent.
_SYNCED = "synced"  # vigil has it now
_SUPERSEDED = "superseded"  # vigil had a newer version: the local copy was dropped
_ALREADY_THERE = "already there"  # vigil's newer version is this very state
_NOT_YET = "not yet"  # vigil is still unreachable (or busy): it stays pending


class Checkpoint:
    """The agent's checkpoint: :meth:`save` a JSON-serialisable state, :meth:`load` it back.

    Typical use, at the top of a bot::

        checkpoint = vigil_agent.Checkpoint()
        state = checkpoint.load() or {"position": 0}
        while True:
            ...
            checkpoint.save(state)

    Under vigil, the state goes to vigil (and a copy to the local file); outside vigil, to
    the local file only, so the bot runs by hand the same way.

    Args:
        name: names the local file. Under vigil there is one checkpoint per agent whatever
            the name, and it defaults to the agent's name (``VIGIL_AGENT``).
        directory: where the local file goes. Default: ``$VIGIL_CHECKPOINT_DIR``, else
            ``$VIGIL_STATE_DIR/agent-checkpoints``, else ``./.vigil-checkpoints``.
        client: the :class:`~vigil_agent.Client` to use (default: the one built from the
            environment).

    Attributes:
        version: the version of vigil's that this copy last saved or loaded (``None``: none
            known yet, or outside vigil). The next save is taken only if it is still vigil's
            latest. A new ``Checkpoint`` starts from the version in its local file.
        path: the local file.

    A ``Checkpoint`` may be shared between threads. Two ``Checkpoint`` objects (or two
    processes) saving to the same agent are two writers: the second to save on an old
    version gets :class:`~vigil_agent.CheckpointConflict`.
    """

    def __init__(
        self,
        name: Optional[str] = None,
        directory: Optional[PathLike] = None,
        *,
        client: Optional[Client] = None,
    ) -> None:
        if client is None:
            from . import default_client

            client = default_client()
        self._client = client
        self.name = name or client.agent or DEFAULT_NAME
        # Who the local copy belongs to: the agent, or outside vigil the checkpoint's name.
        self._owner = client.agent or self.name
        if directory is None:
            directory = client.checkpoint_dir
        if directory is None:
            env = Environment.read()
            directory = checkpoint_directory(env.checkpoint_dir, env.state_dir)
        self.path = Path(directory) / file_name(self.name)
        self._file = LocalFile(self.path)
        transport = client.transport
        self._api = CheckpointApi(transport) if transport is not None else None
        if self._api is None and client.in_vigil:
            client._local_only()
        self._lock = threading.RLock()
        self.version: Optional[int] = None
        self._kept_locally = False
        self._mirror_failed = False
        local = self._file.read()
        if local is not None and not local.pending and local.agent == self._owner:
            self.version = local.version

    def __repr__(self) -> str:
        return f"Checkpoint(name={self.name!r}, path={str(self.path)!r}, version={self.version!r})"

    # -- saving -------------------------------------------------------------------------

    def save(self, state: Any) -> Optional[int]:
        """Save ``state`` (anything :func:`json.dumps` takes, at most 1 MiB as JSON).

        Returns vigil's new version, or ``None`` when the state went to the local file only
        (outside vigil, or vigil unreachable: it is sent when vigil is back).

        Raises:
            CheckpointConflict: vigil holds a newer version than the one this copy built on
                (another writer came first); :attr:`version` is set to it. Nothing was
                overwritten: :meth:`load` the newer state, merge, and save again.
            TypeError, ValueError: ``state`` is not JSON (or is too large).
            OSError: the local file could not be written when it was the only place left.
        """
        document = _encode(state)
        saved_at = time.time()
        with self._lock:
            if self._api is None:
                self._write_local(LocalCopy(document, saved_at, agent=self._owner))
                if not self._client.in_vigil:
                    self._client._outside()
                return None
            local = self._file.read()
            if local is not None and local.pending:
                outcome = self._send_pending(local)
                if outcome == _NOT_YET:
                    self._write_pending(document, saved_at, local.base_version)
                    return None
                if outcome == _SUPERSEDED:
                    raise CheckpointConflict(
                        f"vigil has version {self.version} of {self.name!r}, saved after this "
                        "agent's copy that vigil never got: this state was built on an older "
                        "one. load() the newer state, merge, and save again",
                        self.version,
                    )
            expect = self.version or 0
            try:
                stored = self._api.put(document, expect)
            except Conflict as c:
                self.version = c.current
                raise CheckpointConflict(
                    f"vigil has version {c.current} of {self.name!r}, not {expect} as this copy "
                    "expected: another writer saved in between. load() the newer state, merge, "
                    "and save again",
                    c.current,
                ) from None
            except VigilUnavailable:
                self._write_pending(document, saved_at, expect)
                return None
            self.version = stored.version
            self._mirror(document, stored.version, saved_at)
            return stored.version

    # -- loading ------------------------------------------------------------------------

    def load(self) -> Any:
        """The latest state: vigil's, or the local file's when vigil cannot be reached (or
        has none while the local file has one). ``None`` when there is none anywhere.

        A pending local copy is sent to vigil first (see the module's description); the
        winner is returned. Each call returns a new object.
        """
        with self._lock:
            local = self._file.read()
            if self._api is None:
                if not self._client.in_vigil:
                    self._client._outside()
                return local.state() if local is not None else None
            if local is not None and local.pending:
                outcome = self._send_pending(local)
                if outcome in (_SYNCED, _NOT_YET):
                    return local.state()
                local = self._file.read()
            try:
                remote = self._api.get()
            except VigilUnavailable:
                return local.state() if local is not None else None
            if remote is None:
                self.version = None
                if local is None:
                    return None
                log.warning(
                    "vigil has no checkpoint of %r; resuming from the local copy saved at %s (%s)",
                    self._client.agent,
                    format_rfc3339(local.saved_at),
                    self.path,
                )
                return local.state()
            self.version = remote.version
            if local is None or local.version != remote.version:
                self._mirror_remote(remote)
            return remote.document

    # -- the pending copy ---------------------------------------------------------------

    def _send_pending(self, pending: LocalCopy) -> str:
        """Send the pending local copy; newer wins when vigil has moved on meanwhile."""
        assert self._api is not None
        expect = pending.base_version
        for _ in range(3):
            try:
                stored = self._api.put(pending.document, expect)
            except VigilUnavailable:
                return _NOT_YET
            except Conflict:
                try:
                    remote = self._api.get()
                except VigilUnavailable:
                    return _NOT_YET
                if remote is None:
                    expect = 0
                    continue
                if remote.ts >= pending.saved_at:
                    return self._drop_pending(pending, remote)
                expect = remote.version
                continue
            self.version = stored.version
            self._mirror(pending.document, stored.version, pending.saved_at)
            self._kept_locally = False
            log.info(
                "vigil has the checkpoint saved while it was unreachable (version %s)",
                stored.version,
            )
            return _SYNCED
        # Someone keeps writing between our reads and writes: try again next time.
        return _NOT_YET

    def _drop_pending(self, pending: LocalCopy, remote: Remote) -> str:
        self.version = remote.version
        self._kept_locally = False
        self._mirror_remote(remote)
        if same_document(pending.document, remote.document):
            # The save that seemed to fail (a timeout) had reached vigil after all.
            return _ALREADY_THERE
        log.warning(
            "dropped the local checkpoint of %r saved at %s while vigil was "
            "unreachable: vigil has a newer version (%s, saved at %s)",
            self.name,
            format_rfc3339(pending.saved_at),
            remote.version,
            format_rfc3339(remote.ts),
        )
        return _SUPERSEDED

    # -- the local file -----------------------------------------------------------------

    def _write_pending(self, document: str, saved_at: float, base_version: int) -> None:
        self._write_local(
            LocalCopy(
                document,
                saved_at,
                pending=True,
                base_version=base_version,
                agent=self._owner,
            )
        )
        if not self._kept_locally:
            self._kept_locally = True
            log.info("checkpoints are kept in %s until vigil can be reached", self.path)

    def _write_local(self, copy: LocalCopy) -> None:
        self._file.write(copy)

    def _mirror(self, document: str, version: int, saved_at: float) -> None:
        """Keep the local copy in step with vigil (vigil has it: a failure only logs)."""
        try:
            self._file.write(LocalCopy(document, saved_at, version=version, agent=self._owner))
        except OSError as e:
            if not self._mirror_failed:
                self._mirror_failed = True
                log.warning(
                    "cannot update the local checkpoint %s (%s); vigil has the checkpoint, but "
                    "it cannot be kept here while vigil is unreachable: set "
                    "VIGIL_CHECKPOINT_DIR to a writable directory",
                    self.path,
                    e,
                )
        else:
            self._mirror_failed = False

    def _mirror_remote(self, remote: Remote) -> None:
        self._mirror(_dumps(remote.document), remote.version, remote.ts)


def _dumps(state: Any) -> str:
    return json.dumps(state, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _encode(state: Any) -> str:
    """``state`` as compact JSON text; ``ValueError`` beyond :data:`MAX_DOCUMENT` bytes."""
    document = _dumps(state)
    size = len(document.encode("utf-8"))
    if size > MAX_DOCUMENT:
        raise ValueError(
            f"a checkpoint is at most {MAX_DOCUMENT} bytes of JSON; this one is {size}"
        )
    return document
