"""Times as vigil speaks them: unix seconds on the notify socket, RFC 3339 over HTTP."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Optional, Union

#: What ``degraded(until=...)`` accepts: a moment, or seconds (or a timedelta) from now.
Until = Union[datetime, timedelta, float, int, None]

#: The shortest suspension a declaration asks for: an ``until`` that is already past (or
#: about to be) is moved this far ahead, so it still reaches vigil as "in the future".
MIN_AHEAD_S = 1.0

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def until_timestamp(until: Until, now: Optional[float] = None) -> Optional[float]:
    """``until`` as unix seconds, at least :data:`MIN_AHEAD_S` from ``now`` (``None`` stays).

    A ``datetime`` without a time zone is local time (as :meth:`datetime.timestamp` takes it);
    a number or a ``timedelta`` counts from now.
    """
    if until is None:
        return None
    now = time.time() if now is None else now
    if isinstance(until, datetime):
        at = until.timestamp()
    elif isinstance(until, timedelta):
        at = now + until.total_seconds()
    elif isinstance(until, (int, float)) and not isinstance(until, bool):
        at = now + float(until)
    else:
        raise TypeError(
            "until must be a datetime, a timedelta, seconds from now (a number) or None, "
            f"not {type(until).__name__}"
        )
    if at != at:  # NaN
        raise ValueError("until is not a number")
    return max(at, now + MIN_AHEAD_S)


def format_rfc3339(ts: float) -> str:
    """Unix seconds as RFC 3339 in UTC with milliseconds: ``2026-12-01T10:00:00.000Z``."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> float:
    """An RFC 3339 time (as vigil writes them) as unix seconds; ``ValueError`` if it is not one."""
    m = _RFC3339.match(text.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = float(m.group(7)) if m.group(7) else 0.0
    zone = m.group(8)
    if zone in ("Z", "z"):
        offset = timedelta(0)
    else:
        sign = 1 if zone[0] == "+" else -1
        offset = sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    dt = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    return dt.timestamp() + fraction
