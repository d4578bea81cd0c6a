"""Exceptions raised by the vigil client.

Most calls never raise for vigil's sake: a bot must keep trading when its supervisor is
briefly unreachable. What does raise is what the bot itself must decide about: a checkpoint
that someone else changed (:class:`CheckpointConflict`), or a request vigil refused as
malformed (:class:`VigilError`).
"""

from __future__ import annotations

from typing import Optional

__all__ = ["VigilError", "VigilUnavailable", "CheckpointConflict"]


class VigilError(Exception):
    """Something vigil refused or could not do.

    ``status`` is the HTTP status of vigil's answer, when there was one.
    """

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class VigilUnavailable(VigilError):
    """vigil could not be reached, timed out, failed (5xx), or no longer accepts this run's token.

    The client handles it itself (a checkpoint goes to the local file instead); it is public
    so that code using the lower layers can recognise it.
    """


class CheckpointConflict(VigilError):
    """vigil holds a newer checkpoint than the one this copy of the agent built on.

    Another writer saved in between: a second copy of the agent, or a person. Nothing was
    overwritten. ``current_version`` is the version vigil holds now (``None`` if it holds
    none). The :class:`~vigil_agent.Checkpoint` does not take it as the version it built on:
    its saves keep conflicting until it has loaded the newer state, so the usual answer is::

        try:
            checkpoint.save(state)
        except CheckpointConflict:
            state = merge(state, checkpoint.load())   # or simply start from load()
            checkpoint.save(state)
    """

    def __init__(self, message: str, current_version: Optional[int]) -> None:
        super().__init__(message, status=412)
        self.current_version = current_version
