#!/usr/bin/env python3
"""A stand-in for a crypto exchange, for the example bot (standard library only).

It serves what the bot needs from a real exchange, deterministically, and can be told to
misbehave the way real exchanges do:

    GET  /ticks?symbol=BTC_USDT&after=<id>&limit=<n>
         the ticks after tick <id>, oldest first (at most <n>, default 100); without `after`,
         the latest tick only. A tick is {"id", "ts" (epoch ms), "price"}; ids increase by one
         every --tick-interval seconds since the exchange first started (kept in its
         database, so ids go on where they were after a restart) and a tick's price is a pure
         function of (symbol, id): every client sees the same history, and none is ever lost.
    POST /orders  {"symbol", "side": "buy"|"sell", "qty", "tick_id", "client_order_id"}
         fills at the price of tick `tick_id` (201). `client_order_id` is an idempotency key:
         an order sent again with a key the exchange has seen is not filled twice (200, with
         the first fill and "duplicate": true), and the attempt is logged as a duplicate.
    GET  /orders?client_order_id=<key>   |   GET /orders?symbol=<symbol>
         orders filled so far (to find out whether an order sent before a crash got through).
    GET  /health
         200 while the process serves requests, even during a simulated outage (vigil's
         health check of the stand-in itself: the outage is the exchange's API, not this
         process).

and, to break it on purpose:

    POST /admin/rate-limit {"seconds": N}   every /ticks and /orders request answers
                                            429 Too Many Requests (Retry-After) for N seconds
    POST /admin/down {"seconds": N}         every /ticks and /orders connection is dropped
                                            without an answer for N seconds (a network fault)
    GET  /admin/state                       what is in force, and the current tick

`{"seconds": 0}` ends either at once. Outages are kept in the database, so restarting the
stand-in does not end one early.

Every order received is kept in the SQLite database (--db), table `orders`, one row per
attempt (`duplicate` = 1 for a repeated `client_order_id`): `sqlite3 data/exchange.db
'SELECT * FROM orders'`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import signal
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("exchange")

#: Prices the well-known symbols move around; any other symbol gets one from its name.
BASE_PRICES = {"BTC_USDT": 60000.0, "ETH_USDT": 3000.0, "SOL_USDT": 150.0}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at     REAL    NOT NULL,
    symbol          TEXT    NOT NULL,
    tick_id         INTEGER NOT NULL,
    side            TEXT    NOT NULL,
    qty             REAL    NOT NULL,
    price           REAL    NOT NULL,
    client_order_id TEXT    NOT NULL,
    duplicate       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS orders_client_order_id ON orders (client_order_id);
"""


def _unit(symbol: str, salt: str) -> float:
    """A number in [0, 1) that depends only on (symbol, salt)."""
    digest = hashlib.sha256(f"{symbol}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def price_at(symbol: str, tick_id: int) -> float:
    """The price of ``symbol`` at tick ``tick_id``: a few slow waves and a little noise."""
    base = BASE_PRICES.get(symbol) or 10.0 + 990.0 * _unit(symbol, "base")
    phase = 2 * math.pi * _unit(symbol, "phase")
    x = float(tick_id)
    wave = (
        0.012 * math.sin(x / 40.0 + phase)
        + 0.006 * math.sin(x / 9.7 + 2 * phase)
        + 0.003 * math.sin(x / 3.1 + 3 * phase)
    )
    noise = (_unit(symbol, str(tick_id)) - 0.5) * 0.002
    return round(base * (1.0 + wave + noise), 2)


class Market:
    """The exchange's state: its clock of ticks, its orders, and the outages in force."""

    def __init__(self, db_path: str, tick_interval: float, retry_after: int) -> None:
        self.tick_interval = tick_interval
        self.retry_after = retry_after
        directory = os.path.dirname(os.path.abspath(db_path))
        os.makedirs(directory, exist_ok=True)
        # One connection shared by the request threads, behind a lock: the load is tiny.
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")  # readers (a test, sqlite3) never block us
        self._db.execute("PRAGMA synchronous=FULL")  # an order acknowledged is an order kept
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        epoch = self._meta("epoch")
        if epoch is None:
            epoch = repr(time.time())
            self._set_meta("epoch", epoch)
        self.epoch = float(epoch)

    # -- meta ---------------------------------------------------------------------------

    def _meta(self, key: str) -> Optional[str]:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- ticks --------------------------------------------------------------------------

    def current_tick(self) -> int:
        return max(0, int((time.time() - self.epoch) / self.tick_interval))

    def tick(self, symbol: str, tick_id: int) -> Dict[str, Any]:
        ts_ms = int((self.epoch + tick_id * self.tick_interval) * 1000)
        return {"id": tick_id, "ts": ts_ms, "price": price_at(symbol, tick_id)}

    def ticks(self, symbol: str, after: Optional[int], limit: int) -> List[Dict[str, Any]]:
        now = self.current_tick()
        if after is None:
            return [self.tick(symbol, now)]
        first = max(after + 1, 0)
        last = min(now, first + limit - 1)
        return [self.tick(symbol, i) for i in range(first, last + 1)]

    # -- outages ------------------------------------------------------------------------

    def outage(self, kind: str) -> float:
        """Seconds left of the outage ``kind`` ("rate_limit" or "down"); 0 when none."""
        with self._lock:
            until = float(self._meta(f"{kind}_until") or 0)
        return max(0.0, until - time.time())

    def set_outage(self, kind: str, seconds: float) -> None:
        with self._lock:
            self._set_meta(f"{kind}_until", repr(time.time() + seconds if seconds > 0 else 0.0))

    # -- orders -------------------------------------------------------------------------

    def place(self, order: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        """Fill ``order`` (validated); (HTTP status, answer)."""
        symbol, side, coid = order["symbol"], order["side"], order["client_order_id"]
        tick_id, qty = int(order["tick_id"]), float(order["qty"])
        if tick_id > self.current_tick():
            return 400, {"error": f"tick {tick_id} has not happened yet"}
        price = price_at(symbol, tick_id)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            first = self._db.execute(
                "SELECT * FROM orders WHERE client_order_id = ? AND duplicate = 0", (coid,)
            ).fetchone()
            self._db.execute(
                "INSERT INTO orders (received_at, symbol, tick_id, side, qty, price, "
                "client_order_id, duplicate) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), symbol, tick_id, side, qty, price, coid, 1 if first else 0),
            )
            if first is None:
                seq = self._db.execute("SELECT last_insert_rowid()").fetchone()[0]
        if first is not None:
            log.warning("duplicate order %s (already filled as #%s)", coid, first[0])
            return 200, {"order": self._row(first), "duplicate": True}
        filled = {"seq": seq, "symbol": symbol, "tick_id": tick_id, "side": side, "qty": qty,
                  "price": price, "client_order_id": coid}
        log.info("filled #%s %s %s %s @ %s (tick %s)", seq, symbol, side, qty, price, tick_id)
        return 201, {"order": filled, "duplicate": False}

    def orders(self, where: str, value: str) -> List[Dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM orders WHERE {where} = ? AND duplicate = 0 ORDER BY seq", (value,)
            ).fetchall()
        return [self._row(r) for r in rows]

    @staticmethod
    def _row(r: Tuple[Any, ...]) -> Dict[str, Any]:
        keys = ("seq", "received_at", "symbol", "tick_id", "side", "qty", "price",
                "client_order_id")
        return dict(zip(keys, r))


class Handler(BaseHTTPRequestHandler):
    """One request. The market is the server's (``self.server.market``)."""

    server: "ExchangeServer"
    protocol_version = "HTTP/1.1"

    # -- plumbing -----------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # one line per poll would drown the log; orders and outages are logged instead

    def _send(self, status: int, body: Any, headers: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        data = json.loads(raw or b"{}")
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        return data

    def _trading_blocked(self) -> bool:
        """Answer for a simulated outage, if one is in force (True: answered)."""
        market = self.server.market
        if market.outage("down") > 0:
            # No answer at all: the client sees the connection closed under it.
            self.close_connection = True
            return True
        left = market.outage("rate_limit")
        if left > 0:
            self._send(
                429,
                {"error": "Too Many Requests: rate limit exceeded", "code": 429},
                {"Retry-After": str(min(market.retry_after, max(1, math.ceil(left))))},
            )
            return True
        return False

    # -- routes -------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        market = self.server.market
        try:
            if url.path == "/health":
                self._send(200, {"ok": True, "tick": market.current_tick()})
            elif url.path == "/admin/state":
                self._send(200, {
                    "tick": market.current_tick(),
                    "rate_limit_s": round(market.outage("rate_limit"), 1),
                    "down_s": round(market.outage("down"), 1),
                })
            elif url.path == "/ticks":
                if self._trading_blocked():
                    return
                symbol = q.get("symbol") or ""
                if not symbol:
                    self._send(400, {"error": "symbol is required"})
                    return
                after = int(q["after"]) if "after" in q else None
                limit = max(1, min(int(q.get("limit") or 100), 1000))
                self._send(200, {"symbol": symbol, "ticks": market.ticks(symbol, after, limit)})
            elif url.path == "/orders":
                if self._trading_blocked():
                    return
                if "client_order_id" in q:
                    orders = market.orders("client_order_id", q["client_order_id"])
                elif "symbol" in q:
                    orders = market.orders("symbol", q["symbol"])
                else:
                    self._send(400, {"error": "client_order_id or symbol is required"})
                    return
                self._send(200, {"orders": orders})
            else:
                self._send(404, {"error": f"no such endpoint: GET {url.path}"})
        except ValueError as e:
            self._send(400, {"error": str(e)})

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        path = urlsplit(self.path).path
        market = self.server.market
        try:
            body = self._body()
            if path in ("/admin/rate-limit", "/admin/down"):
                seconds = float(body.get("seconds", 0))
                kind = "rate_limit" if path == "/admin/rate-limit" else "down"
                market.set_outage(kind, seconds)
                log.warning("%s for %ss (asked by %s)", kind.replace("_", " "), seconds,
                            self.client_address[0])
                self._send(200, {"ok": True, kind: seconds})
            elif path == "/orders":
                if self._trading_blocked():
                    return
                for key in ("symbol", "side", "qty", "tick_id", "client_order_id"):
                    if key not in body:
                        raise ValueError(f"{key} is required")
                if body["side"] not in ("buy", "sell"):
                    raise ValueError("side must be buy or sell")
                status, answer = market.place(body)
                self._send(status, answer)
            else:
                self._send(404, {"error": f"no such endpoint: POST {path}"})
        except (ValueError, TypeError, KeyError) as e:
            self._send(400, {"error": f"bad request: {e}"})


class ExchangeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], market: Market) -> None:
        super().__init__(address, Handler)
        self.market = market


def main() -> None:
    parser = argparse.ArgumentParser(description="A stand-in exchange for the example bot.")
    parser.add_argument("--listen", default=os.environ.get("EXCHANGE_LISTEN", "127.0.0.1:8765"),
                        help="HOST:PORT to serve on (default 127.0.0.1:8765)")
    parser.add_argument("--db", default=os.environ.get("EXCHANGE_DB", "data/exchange.db"),
                        help="its SQLite database: the clock's epoch, orders, outages")
    parser.add_argument("--tick-interval", type=float, default=0.5,
                        help="seconds between two ticks (default 0.5)")
    parser.add_argument("--retry-after", type=int, default=2,
                        help="Retry-After (seconds) of a 429 answer (default 2)")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s exchange %(levelname)s %(message)s")
    host, _, port = args.listen.rpartition(":")
    market = Market(args.db, args.tick_interval, args.retry_after)
    server = ExchangeServer((host or "127.0.0.1", int(port)), market)

    def stop(signum: int, frame: Any) -> None:
        log.info("signal %s: stopping", signum)
        # shutdown() waits for serve_forever to return: call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving on http://%s:%s (tick %s, one every %ss)", host, port,
             market.current_tick(), args.tick_interval)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    log.info("stopped")


if __name__ == "__main__":
    main()
