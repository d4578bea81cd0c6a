"""The :class:`Client`: one agent's line to the vigil that runs it.

Two channels, chosen from what vigil gave the run:

* the **notify socket** (``NOTIFY_SOCKET``, when the agent has a ``notify`` check): fast
  datagrams for readiness, heartbeats, status text and declared degradation;
* the **HTTP API** (``VIGIL_URL``, ``VIGIL_AGENT``, ``VIGIL_AGENT_TOKEN``): heartbeats for an
  ``api`` check, declared degradation when there is no notify socket, and checkpoints.

Outside vigil (neither is there) every call does nothing and one warning says so, so the
same bot runs by hand unchanged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Set, Tuple

from ._env import Environment, PathLike, checkpoint_directory
from ._http import DEFAULT_TIMEOUT, HttpTransport
from ._notify import NotifySocket
from ._timeutil import Until, format_rfc3339, until_timestamp
from .errors import VigilUnavailable

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

log = logging.getLogger("vigil_agent")

__all__ = ["Client"]

#: The longest reason or status text vigil keeps (characters).
MAX_TEXT = 200

_READY = b"READY=1"
_WATCHDOG = b"WATCHDOG=1"
# ok() is a sign of life too: the moment an agent declares itself ok, vigil acts on any check
# still failing — and a notify check has been failing all through a degradation longer than
# its max_age (the agent was silent on purpose). vigil applies a datagram's WATCHDOG=1 before
# its DEGRADED=0, so the silence of the degraded time is not taken for a stall.
_DEGRADED_OK = b"WATCHDOG=1\nDEGRADED=0"

# One warning per process, however many clients there are.
_warned_lock = threading.Lock()
_warned: Set[str] = set()


def _warn_once(key: str, message: str, *args: object) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message, *args)


def _one_line(text: str, what: str) -> str:
    """``text`` as one line (control characters become spaces), at most :data:`MAX_TEXT` long."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    cleaned = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text).strip()
    return cleaned[:MAX_TEXT]


# What was last declared: ("ok", None, None) or ("degraded", reason, until unix seconds).
_Declaration = Tuple[str, Optional[str], Optional[float]]


class Client:
    """One agent's connection to vigil.

    Most code uses the module-level functions (:func:`vigil_agent.heartbeat` …), which share
    a client built from the environment by :meth:`from_env`. Build one yourself to choose the
    address, the token or the timeouts::

        client = Client.from_env(timeout=5.0)
        client.ready()

    Nothing here raises because vigil is away: a message that cannot be delivered is dropped
    (and logged once), so the bot keeps running.

    Args:
        url: vigil's API, e.g. ``http://127.0.0.1:9120`` (``VIGIL_URL``).
        agent: the agent's name, e.g. ``trader@BTC_USDT`` (``VIGIL_AGENT``).
        token: this run's token (``VIGIL_AGENT_TOKEN``); never logged or shown.
        notify_socket: the notify socket's address (``NOTIFY_SOCKET``): a path, or ``@name``.
        checkpoint_dir: where :class:`~vigil_agent.Checkpoint` keeps its local files
            (default: ``$VIGIL_CHECKPOINT_DIR``, ``$VIGIL_STATE_DIR/agent-checkpoints``, or
            ``./.vigil-checkpoints``).
        timeout: seconds an HTTP request may take (checkpoints get more: see
            :class:`~vigil_agent.Checkpoint`).
        http_heartbeat_interval: HTTP heartbeats closer together than this many seconds are
            skipped (a heartbeat over the notify socket is never skipped).
        dedup_window: an identical declaration (:meth:`degraded`) is not sent again within
            this many seconds.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        agent: Optional[str] = None,
        token: Optional[str] = None,
        notify_socket: Optional[str] = None,
        *,
        checkpoint_dir: Optional[PathLike] = None,
        timeout: float = DEFAULT_TIMEOUT,
        http_heartbeat_interval: float = 1.0,
        dedup_window: float = 5.0,
    ) -> None:
        self.agent = agent
        self.checkpoint_dir = checkpoint_dir
        self.http_heartbeat_interval = http_heartbeat_interval
        self.dedup_window = dedup_window
        self._notify = NotifySocket(notify_socket) if notify_socket else None
        self._http: Optional[HttpTransport] = None
        if url and agent and token:
            self._http = HttpTransport(url, agent, token, timeout)
        elif url and agent:
            _warn_once(
                "no-token",
                "VIGIL_URL is set but VIGIL_AGENT_TOKEN is not: "
                "vigil's HTTP API (checkpoints, HTTP heartbeats) is not used",
            )
        self._next_http_heartbeat = 0.0
        self._declare_lock = threading.Lock()
        self._declared: _Declaration = ("ok", None, None)
        self._declared_at = float("-inf")

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **options: object) -> Client:
        """A client for the run vigil started: from ``VIGIL_URL``, ``VIGIL_AGENT``,
        ``VIGIL_AGENT_TOKEN``, ``NOTIFY_SOCKET`` and the checkpoint directory variables.

        ``environ`` defaults to :data:`os.environ`; ``options`` are passed to the constructor.
        """
        env = Environment.read(environ)
        options.setdefault(
            "checkpoint_dir", checkpoint_directory(env.checkpoint_dir, env.state_dir)
        )
        return cls(
            url=env.url,
            agent=env.agent,
            token=env.token,
            notify_socket=env.notify_socket,
            **options,  # type: ignore[arg-type]
        )

    def __repr__(self) -> str:
        url = self._http.url if self._http else None
        notify = self._notify.address if self._notify else None
        return f"Client(agent={self.agent!r}, url={url!r}, notify_socket={notify!r})"

    # -- what the client can reach ------------------------------------------------------

    @property
    def in_vigil(self) -> bool:
        """Whether this runs under vigil (it has a notify socket or the HTTP API)."""
        return self._notify is not None or self._http is not None

    @property
    def url(self) -> Optional[str]:
        """vigil's API address, when the HTTP API is usable."""
        return self._http.url if self._http else None

    @property
    def notify_socket(self) -> Optional[str]:
        """The notify socket's address, when there is one."""
        return self._notify.address if self._notify else None

    @property
    def transport(self) -> Optional[HttpTransport]:
        """The HTTP transport (``None`` without the API); for :class:`~vigil_agent.Checkpoint`."""
        return self._http

    def _outside(self) -> None:
        _warn_once(
            "outside",
            "Not running under vigil (no VIGIL_URL/VIGIL_AGENT/VIGIL_AGENT_TOKEN and no "
            "NOTIFY_SOCKET in the environment): vigil_agent's ready, heartbeat, progress, "
            "status, degraded and ok do nothing, and checkpoints are kept in local files only",
        )

    def _local_only(self) -> None:
        _warn_once(
            "local-checkpoints",
            "no VIGIL_URL/VIGIL_AGENT_TOKEN (vigil's API is disabled?): "
            "checkpoints are kept in local files only",
        )

    # -- signs of life ----------------------------------------------------------------

    def ready(self) -> None:
        """Tell vigil the agent has started up (``READY=1``).

        Only the notify socket has a readiness message; over HTTP alone this does nothing.
        """
        if self._notify is not None:
            self._notify.send(_READY)
        elif self._http is None:
            self._outside()

    def heartbeat(self) -> None:
        """A sign of life: resets the agent's ``notify`` (or ``api``) check.

        Over the notify socket this is one non-blocking datagram (a few microseconds): call it
        as often as you like. Over HTTP it is a request, sent at most once per
        ``http_heartbeat_interval``; it only counts when the agent has an ``api`` check.
        """
        notify = self._notify
        if notify is not None:
            notify.heartbeat(_WATCHDOG)
        else:
            self._http_heartbeat()

    def progress(self, note: Optional[str] = None) -> None:
        """The agent made progress: a heartbeat, and ``note`` as its status text if given."""
        if note is None:
            self.heartbeat()
            return
        line = _one_line(note, "note")
        if self._notify is not None:
            self._notify.send(b"WATCHDOG=1\nSTATUS=" + line.encode("utf-8"))
        else:
            self._http_heartbeat()

    def status(self, text: str) -> None:
        """A one-line status shown by ``vigil status`` and the dashboard (``STATUS=``).

        Sent over the notify socket only (vigil's HTTP API has no status text); without one,
        this does nothing.
        """
        line = _one_line(text, "text")
        if self._notify is not None:
            self._notify.send(b"STATUS=" + line.encode("utf-8"))
        elif self._http is None:
            self._outside()
        else:
            log.debug("status text needs a notify socket; not sent: %s", line)

    def _http_heartbeat(self) -> None:
        http = self._http
        if http is None:
            self._outside()
            return
        now = time.monotonic()
        if now < self._next_http_heartbeat:
            return
        self._next_http_heartbeat = now + self.http_heartbeat_interval
        try:
            answer = http.request("POST", http.agent_path("heartbeat"), b"{}")
        except VigilUnavailable:
            self._next_http_heartbeat = now + max(self.http_heartbeat_interval, 2.0)
            return
        if answer.status == 409:
            # No `api` check takes them: asking again every minute is enough (a reload may
            # add one).
            self._next_http_heartbeat = now + 60.0
            _warn_once(
                "no-api-check",
                "vigil does not count HTTP heartbeats for %s (%s); give the agent "
                'a check of kind "api" (or "notify" for the notify socket)',
                self.agent,
                answer.error_text(),
            )
        elif answer.status >= 300:
            _warn_once(
                f"heartbeat-{answer.status}",
                "vigil refused a heartbeat (%s: %s)",
                answer.status,
                answer.error_text(),
            )

    # -- declared state ---------------------------------------------------------------

    def degraded(self, reason: str, until: Until = None) -> None:
        """Declare the agent degraded on purpose: it pauses or slows down, and knows why.

        While degraded, vigil does not act on stall verdicts (crashes are still restarted),
        up to the agent policy's ``max_degraded`` per episode. Use it when a restart would
        only make things worse: a rate limit, an open circuit breaker, an exchange in
        maintenance.

        Args:
            reason: what is wrong, for the people reading the journal (one line, at most 200
                characters), e.g. ``"binance 429, breaker open"``.
            until: when the agent expects to be back to normal: a ``datetime``, a
                ``timedelta`` or seconds from now. ``None``: as long as ``max_degraded``
                allows. A time in the past counts as one second from now.

        The same declaration (same reason, same ``until`` within a second) is not sent again
        within ``dedup_window`` seconds, so retry loops may call this as often as they like.
        """
        line = _one_line(reason, "reason")
        if not line or line == "0":
            raise ValueError("reason must say what is wrong, e.g. 'exchange 429, backing off'")
        at = until_timestamp(until)
        if not self.in_vigil:
            self._outside()
            return
        with self._declare_lock:
            if self._repeats(line, at):
                return
            message = "DEGRADED=" + line
            body: Dict[str, str] = {"state": "degraded", "reason": line}
            if at is not None:
                message += f"\nDEGRADED_UNTIL={at:.3f}"
                body["until"] = format_rfc3339(at)
            if self._deliver(message.encode("utf-8"), body):
                self._declared = ("degraded", line, at)
                self._declared_at = time.monotonic()

    def ok(self) -> None:
        """Declare the agent back to normal after :meth:`degraded`: stall checks apply again.

        It is also a sign of life (like :meth:`heartbeat`): the silence of the degraded time
        is not held against the agent — vigil judges its checks again from this moment.
        Costs nothing when the agent is not degraded (nothing is sent).
        """
        if not self.in_vigil:
            self._outside()
            return
        with self._declare_lock:
            if self._declared[0] == "ok":
                return
            if self._notify is None:
                self._http_sign_of_life()
            if self._deliver(_DEGRADED_OK, {"state": "ok"}):
                self._declared = ("ok", None, None)
                self._declared_at = time.monotonic()

    def _http_sign_of_life(self) -> None:
        """Over HTTP, before ``ok``: a heartbeat for an ``api`` check, which vigil takes before
        it answers (a 409 — no ``api`` check — is no concern here: nothing is logged)."""
        http = self._http
        if http is None:
            return
        try:
            http.request("POST", http.agent_path("heartbeat"), b"{}")
        except VigilUnavailable:
            return
        self._next_http_heartbeat = time.monotonic() + self.http_heartbeat_interval

    def _repeats(self, reason: str, until: Optional[float]) -> bool:
        """The last declaration, sent moments ago, said the same."""
        state, last_reason, last_until = self._declared
        if state != "degraded" or last_reason != reason:
            return False
        if time.monotonic() - self._declared_at >= self.dedup_window:
            return False
        if until is None or last_until is None:
            return until is None and last_until is None
        return abs(until - last_until) < 1.0

    def _deliver(self, datagram: bytes, body: Dict[str, str]) -> bool:
        """Send a declaration over the notify socket, else over HTTP; whether vigil has it."""
        if self._notify is not None and self._notify.send(datagram):
            return True
        http = self._http
        if http is None:
            return False
        try:
            answer = http.request(
                "POST", http.agent_path("status"), json.dumps(body).encode("utf-8")
            )
        except VigilUnavailable:
            return False
        if answer.status != 200:
            log.warning(
                "vigil refused the declaration %r (%s: %s)",
                body.get("state"),
                answer.status,
                answer.error_text(),
            )
            return False
        data = answer.json()
        if isinstance(data, dict):
            log.debug("vigil says: %s", data.get("note"))
        return True

    # -- checkpoints and the rest -------------------------------------------------------

    def checkpoint(
        self, name: Optional[str] = None, directory: Optional[PathLike] = None
    ) -> Checkpoint:
        """This agent's :class:`~vigil_agent.Checkpoint` (see there)."""
        from .checkpoint import Checkpoint

        return Checkpoint(name, directory, client=self)

    def close(self) -> None:
        """Release the notify socket (the client still works: it opens a new one if needed)."""
        if self._notify is not None:
            self._notify.close()
