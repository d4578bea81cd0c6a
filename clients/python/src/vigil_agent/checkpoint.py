"""Checkpoints: the agent's own state, kept by vigil so that a restarted agent resumes.

vigil keeps one checkpoint per agent, versioned (1, 2, 3 …) and written compare-and-swap:
a save names the version it was built on (the version this copy last saved or loaded), and
vigil refuses it if another writer came first. Every save also leaves a local copy in a
file, which carries the state through the moments vigil cannot keep it. The rules are the
Rust client's (``crates/vigil-agent``):

* a refused save (412) raises :class:`~vigil_agent.CheckpointConflict` and does not move the
  version this copy knows: saves keep conflicting until :meth:`Checkpoint.load` — except when
  vigil's version is this copy's own pending save, which got no answer but was taken: it is
  adopted and the save retried once;
* vigil cannot keep it now (unreachable, timing out, 5xx, 401) → :meth:`Checkpoint.save`
  writes the local file (atomically, durably), marked *pending* and built on the known
  version, and returns ``None``; it does not raise;
* :meth:`Checkpoint.load` re-syncs: a pending copy that vigil has is marked synced; one built
  on vigil's latest version, or on a newer one than vigil has (a lost or restored store), is
  sent on top of vigil's; one built on an older version is dropped (vigil's newer version
  wins, as does a version written while the copy was being sent). A synced copy is sent back
  to a vigil that has no checkpoint. Versions decide, never the clocks of the agent and
  vigil.
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
            latest; a conflict does not move it, only :meth:`load` does. A new
            ``Checkpoint`` starts from the version of its local file when that one is synced.
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

        Returns vigil's new version, or ``None`` when the state went to the local file only:
        outside vigil, or vigil could not keep it now (unreachable, timing out, answering 5xx,
        or not accepting this run's token — a vigil that just restarted). A pending copy is
        built on :attr:`version`; :meth:`load` sends it when vigil is back.

        Raises:
            CheckpointConflict: vigil holds another version than :attr:`version`, the one
                this copy built on (another writer came first). Nothing was overwritten, and
                :attr:`version` is not moved: every save conflicts until :meth:`load` has
                read the newer state (merge it, and save again).
            VigilError: vigil refused the checkpoint for another reason.
            TypeError, ValueError: ``state`` is not JSON (or is too large).
            OSError: the local file could not be written when vigil did not take the state.
        """
        document = _encode(state)
        saved_at = time.time()
        with self._lock:
            if self._api is None:
                self._write_local(LocalCopy(document, saved_at, agent=self._owner))
                if not self._client.in_vigil:
                    self._client._outside()
                return None
            expect = self.version or 0
            try:
                try:
                    stored = self._api.put(document, expect)
                except Conflict as c:
                    if c.current is None or not self._landed_while_unanswered(expect, c.current):
                        raise
                    # The last save got no answer, yet vigil took it: this one goes on top.
                    log.info("vigil took the checkpoint that got no answer (version %s)", c.current)
                    self.version = expect = c.current
                    self._kept_locally = False
                    stored = self._api.put(document, expect)
            except Conflict as c:
                message = _conflict_message(self.name, c.current, expect)
                raise CheckpointConflict(message, c.current) from None
            except VigilUnavailable:
                # Built on the version this copy knows: sent later with that as If-Match.
                self._write_pending(document, saved_at, expect)
                return None
            self.version = stored.version
            self._kept_locally = False
            self._mirror(document, stored.version, saved_at)
            return stored.version

    def _landed_while_unanswered(self, known: int, current: int) -> bool:
        """Whether vigil's version ``current`` is this copy's pending state: a save built on
        ``known`` that got no answer (a timeout) but was taken."""
        assert self._api is not None
        local = self._file.read()
        if local is None or not local.pending or local.base_version != known:
            return False
        try:
            remote = self._api.get()
        except VigilUnavailable:
            return False
        return (
            remote is not None
            and remote.version == current
            and same_document(local.document, remote.document)
        )

    # -- loading ------------------------------------------------------------------------

    def load(self) -> Any:
        """The agent's latest state, or ``None`` when there is none anywhere; each call
        returns a new object.

        vigil's latest, when vigil can be asked, re-synced with the local copy first:

        * a pending copy (saved while vigil could not keep it) that vigil has after all is
          marked synced with vigil's version;
        * a pending copy built on vigil's latest version, or on a later one than vigil has (a
          lost store, a restored backup), is sent on top of vigil's (``If-Match`` vigil's
          version, ``0`` for none) and returned — still pending if vigil cannot keep it now;
        * a pending copy built on an older version is dropped: vigil's newer version,
          written by someone else meanwhile, wins (and replaces the local copy);
        * a synced copy, when vigil has no checkpoint (a new or lost store), is sent back
          (``If-Match: 0``) and returned: it is all there is;
        * a copy refused because another writer saved between the look and the send (412)
          loses: vigil's latest is asked again, returned, and replaces the local copy (the
          local copy is returned if vigil cannot be asked at that moment).

        When vigil cannot be asked (unreachable, 5xx, token not accepted), the local copy.

        Raises:
            VigilError: vigil refused (e.g. it does not know the agent).
        """
        with self._lock:
            local = self._file.read()
            if self._api is None:
                if not self._client.in_vigil:
                    self._client._outside()
                return local.state() if local is not None else None
            try:
                remote = self._api.get()
            except VigilUnavailable:
                if local is None:
                    return None
                self.version = (local.base_version if local.pending else local.version) or None
                return local.state()
            latest = remote.version if remote is not None else 0
            self.version = latest or None
            if local is not None:
                landed = remote is not None and same_document(local.document, remote.document)
                if local.pending:
                    # Nothing reached vigil since the copy's base (or vigil has less than
                    # that: a lost or restored store): it becomes the next version.
                    send = not landed and local.base_version >= latest
                else:
                    # vigil lost it (a new store, a deleted database): the copy is all there is.
                    send = remote is None
                if send:
                    return self._send_local(local, latest)
                if landed and local.pending:
                    assert remote is not None
                    log.info(
                        "vigil took the checkpoint that got no answer (version %s)",
                        remote.version,
                    )
                    self._kept_locally = False
                    self._mirror(local.document, remote.version, local.saved_at)
                    return remote.document
                if local.pending:
                    # (Not sent, not landed: vigil has a newer version than the copy's base.)
                    log.warning(
                        "dropped the local checkpoint of %r saved at %s while vigil could not "
                        "keep it (built on version %s): vigil has version %s, written "
                        "meanwhile, which wins",
                        self.name,
                        format_rfc3339(local.saved_at),
                        local.base_version,
                        latest,
                    )
            if remote is None:
                return None
            if (
                local is None
                or local.pending
                or local.version != remote.version
                or not same_document(local.document, remote.document)
            ):
                self._mirror_remote(remote)
            return remote.document

    def _send_local(self, local: LocalCopy, expect: int) -> Any:
        """Send the local copy as the version after ``expect``; its state."""
        assert self._api is not None
        try:
            stored = self._api.put(local.document, expect)
        except VigilUnavailable:
            # vigil went away again: the copy stays as it is (pending), and is the state.
            return local.state()
        except Conflict:
            # Someone wrote between the look and the send: theirs is newer and wins.
            return self._lost_the_race(local)
        self.version = stored.version
        self._kept_locally = False
        self._mirror(local.document, stored.version, local.saved_at)
        log.info(
            "vigil has the checkpoint kept locally (saved at %s), as version %s",
            format_rfc3339(local.saved_at),
            stored.version,
        )
        return local.state()

    def _lost_the_race(self, local: LocalCopy) -> Any:
        """The local copy was refused (412): someone wrote between the look and the send.
        vigil's latest, asked again (and the local copy synced with it); the local copy
        when vigil cannot be asked now (or has nothing after all)."""
        assert self._api is not None
        try:
            remote = self._api.get()
        except VigilUnavailable:
            return local.state()
        if remote is None:
            return local.state()
        self.version = remote.version
        self._kept_locally = False
        self._mirror_remote(remote)
        if local.pending:
            log.warning(
                "dropped the local checkpoint of %r saved at %s (built on version %s): "
                "version %s was written in vigil while it was being sent, and wins",
                self.name,
                format_rfc3339(local.saved_at),
                local.base_version,
                remote.version,
            )
        else:
            log.info(
                "the local checkpoint of %r was not sent back: version %s was written in "
                "vigil meanwhile, and wins",
                self.name,
                remote.version,
            )
        return remote.document

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


def _conflict_message(name: str, current: Optional[int], expect: int) -> str:
    held = f"version {current}" if current is not None else "no version"
    return (
        f"vigil has {held} of {name!r}, not {expect} as this copy expected: another writer "
        "saved in between. Saves are refused until load() has read vigil's state: load() it, "
        "merge, and save again"
    )


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
