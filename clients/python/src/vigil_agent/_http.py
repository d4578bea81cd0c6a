"""vigil's HTTP API, as one agent's run uses it (standard library ``urllib`` only).

Every request carries the run's own token (``Authorization: Bearer $VIGIL_AGENT_TOKEN``).
The token is kept in one private attribute and is never part of a message, an exception
or a ``repr``. Proxies from the environment are ignored (vigil is local) and redirects are
not followed, so the token goes to vigil's address and nowhere else.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from email.message import Message
from typing import Any, Dict, Optional
from urllib.parse import quote

from .errors import VigilUnavailable

log = logging.getLogger("vigil_agent")

#: Seconds a request may take before vigil counts as unreachable.
DEFAULT_TIMEOUT = 2.0


class Response:
    """An answer of vigil's: status, headers and body (bytes)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Message, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        """The body as JSON (``None`` when it is empty or not JSON)."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def error_text(self) -> str:
        """vigil's explanation of a refusal (its ``error`` field), or the raw body."""
        data = self.json()
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return str(data["error"])
        return self.body[:300].decode("utf-8", "replace")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HttpTransport:
    """Requests to one vigil for one agent, with that agent's token.

    ``request`` returns vigil's answer for any 2xx, 3xx or 4xx status except 401, and raises
    :class:`VigilUnavailable` when vigil cannot be reached, times out, answers 5xx, or
    answers 401 (the run's token is no longer accepted: its run ended, or vigil's token key
    was replaced). It logs one warning when vigil becomes unavailable and one line when it is
    back.
    """

    def __init__(self, url: str, agent: str, token: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.agent = agent
        self.timeout = timeout
        self.__token = token
        self._agent_path = "/agents/" + quote(agent, safe="")
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())
        self._down = False
        #: Monotonic time of the last failure (``None`` while vigil answers).
        self.down_since: Optional[float] = None

    def __repr__(self) -> str:
        return f"HttpTransport(url={self.url!r}, agent={self.agent!r})"

    def agent_path(self, suffix: str) -> str:
        """``/agents/<agent, URL-encoded>/<suffix>``."""
        return f"{self._agent_path}/{suffix}"

    def request(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Response:
        """Send one request; see the class for what raises."""
        all_headers = {
            "Authorization": "Bearer " + self.__token,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "vigil-agent-python",
        }
        if headers:
            all_headers.update(headers)
        req = urllib.request.Request(self.url + path, data=body, headers=all_headers, method=method)
        what = f"{method} {path}"
        try:
            with self._opener.open(req, timeout=timeout or self.timeout) as res:
                answer = Response(res.status, res.headers, res.read())
        except urllib.error.HTTPError as e:
            try:
                answer = Response(e.code, e.headers, e.read())
            finally:
                e.close()
        except (urllib.error.URLError, http.client.HTTPException, socket.timeout, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise self._unavailable(what, f"cannot reach vigil at {self.url}: {reason}") from None
        if answer.status >= 500:
            raise self._unavailable(
                what, f"vigil answered {answer.status}: {answer.error_text()}", answer.status
            )
        if answer.status == 401:
            raise self._unavailable(
                what,
                f"vigil no longer accepts this run's token (401: {answer.error_text()})",
                401,
            )
        if self._down:
            self._down = False
            self.down_since = None
            log.info("vigil at %s answers again", self.url)
        return answer

    def _unavailable(self, what: str, why: str, status: Optional[int] = None) -> VigilUnavailable:
        if not self._down:
            self._down = True
            self.down_since = time.monotonic()
            log.warning(
                "%s failed: %s; heartbeats and declarations are dropped and "
                "checkpoints are kept in the local file until vigil is back",
                what,
                why,
            )
        else:
            log.debug("%s failed: %s", what, why)
        return VigilUnavailable(why, status)
