"""The systemd notify protocol (sd_notify(3)): datagrams to the socket in ``NOTIFY_SOCKET``.

One unconnected datagram socket is kept for the life of the process and every message is
sent with ``sendto`` to the address: a restarted vigil binds the same address again, and the
next message simply reaches it (a connected socket would keep failing). Sending never
raises: a supervisor that is briefly away must not take the bot down with it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Optional, Union

log = logging.getLogger("vigil_agent")

#: At most one warning about an unreachable socket in this many seconds.
_WARN_EVERY_S = 60.0

#: How long a message that matters (not a heartbeat) is retried while vigil's queue is full.
_BUSY_RETRY_S = 0.1


def socket_address(value: str) -> Union[str, bytes]:
    """``NOTIFY_SOCKET``'s value as an address for ``sendto``: ``@name`` is an abstract socket."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return os.fsencode(value)


class NotifySocket:
    """A cached, non-blocking datagram socket sending to one notify address.

    ``send`` returns whether the datagram left (vigil has it in its queue); it never raises.
    The socket is non-blocking so that a supervisor that stopped reading can never block
    the bot: a heartbeat that finds the queue full is dropped (the next one follows soon),
    other messages are retried for up to 0.1 s.
    """

    __slots__ = ("address", "_target", "_sock", "_lock", "_failing", "_warned_at")

    def __init__(self, address: str) -> None:
        self.address = address
        self._target = socket_address(address)
        self._sock: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._failing = False
        self._warned_at = float("-inf")

    def _open(self) -> socket.socket:
        with self._lock:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            return self._sock

    def send(self, message: bytes, *, retry_busy: bool = True) -> bool:
        """Send one datagram (lines separated by ``\\n``). ``False`` if it could not be sent."""
        sock = self._sock or self._open()
        try:
            sock.sendto(message, self._target)
        except BlockingIOError:
            if not retry_busy or not self._send_when_free(sock, message):
                return self._failed("vigil's notify queue is full")
        except OSError as e:
            return self._failed(e.strerror or str(e))
        if self._failing:
            self._failing = False
            log.info("the notify socket %s takes messages again", self.address)
        return True

    def heartbeat(self, message: bytes) -> bool:
        """The fast path for ``WATCHDOG=1``: one ``sendto``, no retry when vigil is busy."""
        sock = self._sock or self._open()
        try:
            sock.sendto(message, self._target)
        except BlockingIOError:
            return self._failed("vigil's notify queue is full")
        except OSError as e:
            return self._failed(e.strerror or str(e))
        if self._failing:
            self._failing = False
            log.info("the notify socket %s takes messages again", self.address)
        return True

    def _send_when_free(self, sock: socket.socket, message: bytes) -> bool:
        deadline = time.monotonic() + _BUSY_RETRY_S
        while time.monotonic() < deadline:
            time.sleep(0.005)
            try:
                sock.sendto(message, self._target)
                return True
            except BlockingIOError:
                continue
            except OSError:
                return False
        return False

    def _failed(self, why: str) -> bool:
        now = time.monotonic()
        if not self._failing and now - self._warned_at >= _WARN_EVERY_S:
            self._failing = True
            self._warned_at = now
            log.warning(
                "cannot send to the notify socket %s (%s); "
                "messages are dropped until vigil is back",
                self.address,
                why,
            )
        return False

    def close(self) -> None:
        """Close the socket (a later ``send`` opens a new one)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
