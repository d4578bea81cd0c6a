#!/usr/bin/env python3
"""A trading bot that survives what trading bots go through — the example for vigil.

This is the "ResilientTraderAgent" template of vigil's seed 004 ("Solving the Persistence
Problem") made real: every one of its five layers is here, with vigil doing the parts a bot
should not do for itself.

1. **Process supervision** — vigil runs the bot, restarts it when it dies (`vigil.toml`).
2. **State checkpointing** — `vigil_agent.Checkpoint` after every tick; a restarted bot
   `load()`s it and resumes where it was. While vigil itself is away the checkpoint goes to
   a local file, and is handed to vigil when it is back.
3. **Health monitoring** — `vigil_agent.progress()` after every unit of real work (never from
   a timer thread: a heartbeat that goes on while the work is stuck hides the stall), read
   by the `notify` check in `vigil.toml`.
4. **Retries and a circuit breaker** — tenacity retries network errors and 429s (honouring
   Retry-After); pybreaker stops calling an exchange that keeps failing. Both tell vigil,
   through `vigil_agent.adapters`, that the bot is *degraded on purpose*, so vigil does not
   restart it for the heartbeats it stops sending meanwhile — and both say `ok` when calls
   go through again.
5. **Graceful degradation** — an exchange that fails is waited out, never a reason to crash.
   But a truly unexpected error (a bug, a corrupt database) *does* crash the bot, with its
   traceback: vigil restarts it, and after a few crashes quarantines it and tells a person.
   Catching everything would hide exactly the failures a supervisor is there for.

Exactly-once decisions. Every tick the exchange publishes is decided once, in order:

* The `decisions` table's primary key is the tick id: a decision cannot be recorded twice.
* A decision is committed to SQLite *before* its order goes out, and the order carries a
  `client_order_id` derived from the tick (an idempotency key). After a crash, an order whose
  fate is unknown is looked up on the exchange before it is sent again.
* The checkpoint is saved *after* the decision is committed, so the table may be ahead of
  the checkpoint (killed in between) but never behind: on start the rows past the
  checkpoint are replayed, not decided again.

Run it under vigil (`vigil run -c examples/python-bot/vigil.toml`, see README.md), or by hand:

    python3 exchange.py &
    PYTHONPATH=../../clients/python/src python3 bot.py --symbol BTC_USDT

Configuration: command-line flags, else environment variables (`BOT_SYMBOL` — else vigil's
`VIGIL_INSTANCE` —, `EXCHANGE_URL`, `BOT_DB`). Python ≥ 3.9; needs `vigil-agent`, `tenacity`
and `pybreaker` (`pip install './clients/python[tenacity,pybreaker]'`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any, Callable, Dict, List, Optional, Sequence
from urllib.parse import urlencode

import pybreaker
from tenacity import RetryCallState, retry_if_exception_type

import vigil_agent
from vigil_agent.adapters.pybreaker import VigilListener
from vigil_agent.adapters.tenacity import report

log = logging.getLogger("bot")


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    symbol: str
    exchange_url: str
    db_path: str
    #: Units bought or sold per trade, and the most the bot may hold.
    lot: float = 1.0
    max_lots: int = 3
    #: Seconds between two polls of the exchange when there is no new tick.
    poll_interval: float = 0.25

    @classmethod
    def from_args(cls, argv: Optional[Sequence[str]] = None) -> "Config":
        env = os.environ
        p = argparse.ArgumentParser(description="The example trading bot for vigil.")
        p.add_argument("--symbol", default=env.get("BOT_SYMBOL") or env.get("VIGIL_INSTANCE"),
                       help="what it trades, e.g. BTC_USDT (env BOT_SYMBOL, else VIGIL_INSTANCE)")
        p.add_argument("--exchange", default=env.get("EXCHANGE_URL", "http://127.0.0.1:8765"),
                       help="the exchange's URL (env EXCHANGE_URL)")
        p.add_argument("--db", default=env.get("BOT_DB"),
                       help="its decisions database (env BOT_DB; default data/SYMBOL.db)")
        p.add_argument("--lot", type=float, default=1.0, help="units per trade (default 1)")
        p.add_argument("--max-lots", type=int, default=3, help="most lots held (default 3)")
        a = p.parse_args(argv)
        if not a.symbol:
            p.error("--symbol is required (or BOT_SYMBOL, or run it as a vigil template instance)")
        return cls(
            symbol=a.symbol,
            exchange_url=a.exchange.rstrip("/"),
            db_path=a.db or os.path.join("data", f"{a.symbol}.db"),
            lot=a.lot,
            max_lots=a.max_lots,
        )


# ---------------------------------------------------------------------------------------
# The strategy: pure functions of the state and a tick, so that a restarted bot can replay
# decisions it finds in its database and arrive at exactly the state it had.
# ---------------------------------------------------------------------------------------

#: Weight of the newest price in the moving average, and how far from it a price must be to
#: trade (0.3 %).
EMA_ALPHA = 0.05
THRESHOLD = 0.003


@dataclass(frozen=True)
class State:
    """What the bot must remember across restarts: this is its checkpoint."""

    last_tick: Optional[int] = None  # the last tick decided (None: nothing decided yet)
    position: int = 0  # lots held
    pnl: float = 0.0  # cash + position marked at the last price
    trades: int = 0
    cash: float = 0.0  # quote currency spent (-) or received (+)
    ema: Optional[float] = None  # the strategy's moving average

    def to_checkpoint(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, doc: Dict[str, Any]) -> "State":
        # Tolerant of older checkpoints: a key this version added gets its default.
        known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        return cls(**known)


def decide(state: State, price: float, max_lots: int) -> str:
    """Buy below the moving average, sell above it: "buy", "sell" or "hold"."""
    if state.ema is None:
        return "hold"
    if price < state.ema * (1 - THRESHOLD) and state.position < max_lots:
        return "buy"
    if price > state.ema * (1 + THRESHOLD) and state.position > 0:
        return "sell"
    return "hold"


def apply(state: State, tick_id: int, price: float, action: str, lot: float) -> State:
    """The state after deciding ``action`` on tick ``tick_id``."""
    position, cash, trades = state.position, state.cash, state.trades
    if action == "buy":
        position, cash, trades = position + 1, cash - price * lot, trades + 1
    elif action == "sell":
        position, cash, trades = position - 1, cash + price * lot, trades + 1
    ema = price if state.ema is None else state.ema + EMA_ALPHA * (price - state.ema)
    return State(
        last_tick=tick_id,
        position=position,
        pnl=round(cash + position * lot * price, 2),
        trades=trades,
        cash=round(cash, 2),
        ema=round(ema, 6),
    )


# ---------------------------------------------------------------------------------------
# Decisions: SQLite, one row per tick (the primary key makes a repeated decision impossible)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    tick_id: int
    symbol: str
    ts: int
    price: float
    action: str
    position_after: int
    order_state: str  # "none" (hold), "pending" (not confirmed by the exchange), "filled"

    @property
    def client_order_id(self) -> str:
        # The idempotency key: one per (symbol, tick), so the same decision is the same order.
        return f"{self.symbol}-{self.tick_id}"


class DecisionStore:
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS decisions (
        tick_id        INTEGER PRIMARY KEY,  -- one decision per tick, ever
        symbol         TEXT    NOT NULL,
        ts             INTEGER NOT NULL,     -- the tick's time (epoch ms)
        price          REAL    NOT NULL,
        action         TEXT    NOT NULL,     -- buy, sell, hold
        position_after INTEGER NOT NULL,
        order_state    TEXT    NOT NULL,     -- none, pending, filled
        decided_at     REAL    NOT NULL,
        pid            INTEGER NOT NULL      -- the process that decided it
    );
    """

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # committed = on disk: a kill loses nothing
        self._db.executescript(self.SCHEMA)

    def record(self, d: Decision) -> None:
        """Commit a decision. A second one for the same tick raises ``sqlite3.IntegrityError``
        — which would be a bug in the resume logic, and is left to crash the bot."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (d.tick_id, d.symbol, d.ts, d.price, d.action, d.position_after,
                 d.order_state, time.time(), os.getpid()),
            )

    def mark_filled(self, tick_id: int) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "UPDATE decisions SET order_state = 'filled' WHERE tick_id = ?", (tick_id,)
            )

    def after(self, tick_id: Optional[int]) -> List[Decision]:
        """Decisions past ``tick_id`` (all of them for ``None``), oldest first."""
        rows = self._db.execute(
            "SELECT tick_id, symbol, ts, price, action, position_after, order_state "
            "FROM decisions WHERE tick_id > ? ORDER BY tick_id",
            (-1 if tick_id is None else tick_id,),
        ).fetchall()
        return [Decision(*r) for r in rows]

    def pending(self) -> List[Decision]:
        rows = self._db.execute(
            "SELECT tick_id, symbol, ts, price, action, position_after, order_state "
            "FROM decisions WHERE order_state = 'pending' ORDER BY tick_id"
        ).fetchall()
        return [Decision(*r) for r in rows]


# ---------------------------------------------------------------------------------------
# The exchange: one HTTP attempt goes through the circuit breaker; tenacity retries attempts
# ---------------------------------------------------------------------------------------


class ExchangeError(Exception):
    """The exchange could not serve a request: expected now and then, waited out."""


class ExchangeUnavailable(ExchangeError):
    """Network error, timeout, 5xx: the request may or may not have reached the exchange."""


class RateLimited(ExchangeError):
    """429: the exchange refused the request (it did not act on it); retry after a while."""

    def __init__(self, retry_after: float) -> None:
        # The same text for every 429, so that vigil journals one declaration per storm.
        super().__init__("HTTP 429 Too Many Requests")
        self.retry_after = retry_after


class ExchangeRejected(Exception):
    """Any other 4xx: the exchange says *we* are wrong. Not retried, not waited out: a bug."""


class Exchange:
    """The exchange's API, with retries, a circuit breaker, and vigil told about both.

    Layers, innermost first: one HTTP attempt → the circuit breaker (counts failed attempts;
    once open, attempts fail at once with ``pybreaker.CircuitBreakerError``, which is not
    retried) → tenacity (retries network errors and 429s a few times, then gives up with the
    last error).
    """

    def __init__(self, url: str, stopping: threading.Event, timeout: float = 3.0) -> None:
        self.url = url
        self.timeout = timeout
        self._stopping = stopping
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        # pybreaker → vigil: open = degraded until reset_timeout (+ a margin), closed = ok.
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=3,
            reset_timeout=10,
            name="exchange",
            exclude=[ExchangeRejected],  # our mistakes are not the exchange failing
            listeners=[VigilListener(), _LogBreaker()],
        )
        # tenacity → vigil: each wait before a retry = degraded until the wait is over (+ 5 s);
        # a call that finally succeeds = ok.
        self._reporter = report("exchange")
        retrying = self._reporter.retry(
            retry=retry_if_exception_type((ExchangeUnavailable, RateLimited)),
            wait=self._wait,
            stop=self._stop,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,  # after the last attempt, raise its error (not tenacity's RetryError)
        )
        self.fetch_ticks: Callable[[str, Optional[int]], List[Dict[str, Any]]] = retrying(
            self.get_ticks
        )
        self.place_order: Callable[[Decision, float], Dict[str, Any]] = retrying(
            self.post_order
        )
        self.find_order: Callable[[str], Optional[Dict[str, Any]]] = retrying(self.get_order)

    # -- tenacity's policy ----------------------------------------------------------------

    @staticmethod
    def _wait(rs: RetryCallState) -> float:
        error = rs.outcome.exception() if rs.outcome else None
        if isinstance(error, RateLimited):
            return min(max(error.retry_after, 0.5), 30.0)  # what the exchange asks, bounded
        return min(0.5 * 2.0 ** (rs.attempt_number - 1), 8.0)  # 0.5, 1, 2, … 8 s

    def _stop(self, rs: RetryCallState) -> bool:
        return rs.attempt_number >= 4 or self._stopping.is_set()

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)  # a shutdown cuts the wait short

    @staticmethod
    def _log_retry(rs: RetryCallState) -> None:
        error = rs.outcome.exception() if rs.outcome else None
        sleep = rs.next_action.sleep if rs.next_action else 0.0
        name = getattr(rs.fn, "__name__", "call")
        log.warning("%s failed (%s), retry %d in %.1fs", name, error, rs.attempt_number, sleep)

    # -- one attempt each (the retrying versions are fetch_ticks, place_order, find_order) --

    def get_ticks(self, symbol: str, after: Optional[int]) -> List[Dict[str, Any]]:
        query: Dict[str, Any] = {"symbol": symbol, "limit": 100}
        if after is not None:
            query["after"] = after
        ticks = self._request("GET", "/ticks?" + urlencode(query))["ticks"]
        return list(ticks)

    def post_order(self, d: Decision, lot: float) -> Dict[str, Any]:
        body = {"symbol": d.symbol, "side": d.action, "qty": lot, "tick_id": d.tick_id,
                "client_order_id": d.client_order_id}
        return dict(self._request("POST", "/orders", body)["order"])

    def get_order(self, client_order_id: str) -> Optional[Dict[str, Any]]:
        orders = self._request("GET", "/orders?" + urlencode({"client_order_id": client_order_id}))
        found = orders["orders"]
        return dict(found[0]) if found else None

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        """One attempt, through the circuit breaker."""
        return self.breaker.call(self._http, method, path, body)

    def _http(self, method: str, path: str, body: Any) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(req, timeout=self.timeout) as res:
                raw = res.read()
        except urllib.error.HTTPError as e:
            try:
                text = e.read()[:200].decode("utf-8", "replace")
            finally:
                e.close()
            if e.code == 429:
                raise RateLimited(_retry_after(e.headers.get("Retry-After"))) from None
            if e.code >= 500:
                raise ExchangeUnavailable(f"HTTP {e.code}: {text}") from None
            raise ExchangeRejected(f"{method} {path}: HTTP {e.code}: {text}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            # Connection refused or reset, timeout, an answer cut short.
            reason = getattr(e, "reason", None) or e
            raise ExchangeUnavailable(f"{type(reason).__name__}: {reason}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise ExchangeUnavailable(f"not JSON: {raw[:100]!r}") from None


def _retry_after(value: Optional[str]) -> float:
    try:
        return float(value) if value else 1.0
    except ValueError:
        return 1.0


class _LogBreaker(pybreaker.CircuitBreakerListener):
    """The breaker's state changes, in the bot's own log."""

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        old = getattr(old_state, "name", old_state)
        log.warning("circuit breaker %s: %s -> %s", cb.name, old, new_state.name)


# ---------------------------------------------------------------------------------------
# Fault injection, for the tests and for trying the resume logic out by hand
# ---------------------------------------------------------------------------------------


class Faults:
    """With ``BOT_FAULT_INJECTION=1`` in its environment, the bot kills itself (SIGKILL: no
    cleanup, like a power cut) at the point named in the file ``<db>.fault``, once:

    * ``decision`` — a buy or sell committed to the table, not yet checkpointed nor sent;
    * ``order`` — the order filled by the exchange, not yet marked filled in the table.

    These are the two crash windows the resume logic is for. ``echo decision >
    data/BTC_USDT.db.fault``, then watch the next run replay the decision and send its order
    once. Without the variable this does nothing (and costs nothing).
    """

    def __init__(self, db_path: str) -> None:
        enabled = os.environ.get("BOT_FAULT_INJECTION") == "1"
        self.path = db_path + ".fault" if enabled else None

    def point(self, name: str) -> None:
        if self.path is None:
            return
        try:
            with open(self.path) as f:
                wanted = f.read().strip()
        except FileNotFoundError:
            return
        if wanted == name:
            os.unlink(self.path)
            log.warning("fault injection: SIGKILL at %r", name)
            os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------------------
# The bot
# ---------------------------------------------------------------------------------------


class ResilientTrader:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping = threading.Event()
        self.decisions = DecisionStore(config.db_path)
        self.exchange = Exchange(config.exchange_url, self.stopping)
        self.faults = Faults(config.db_path)
        # Under vigil: kept by vigil, one per agent (and in a local file named after the agent
        # while vigil is away). By hand: only the local file, in ./.vigil-checkpoints/, named
        # after the symbol so that two bots started by hand do not share one.
        self.checkpoint = vigil_agent.Checkpoint(
            os.environ.get("VIGIL_AGENT") or f"trader@{config.symbol}"
        )
        self.state = State()
        # Orders decided but not confirmed by the exchange: tick id → whether their fate is
        # unknown (sent, but the answer was lost, or sent by a run that was killed) and the
        # exchange must be asked before they are sent again.
        self.unsent: Dict[int, bool] = {}
        self._paused = ""  # why the exchange is paused (logged when it changes)

    # -- start: where was I? ----------------------------------------------------------------

    def resume(self) -> None:
        saved = self.checkpoint.load()
        state = State.from_checkpoint(saved) if saved else State()
        # The decision's row is committed before the checkpoint is saved. Killed between the
        # two, the table holds decisions past the checkpoint: they were made (and their orders
        # perhaps sent), so they are replayed into the state — never decided again. (The other
        # way round cannot happen: no checkpoint is saved before its decision is committed.)
        replayed = self.decisions.after(state.last_tick)
        for d in replayed:
            state = apply(state, d.tick_id, d.price, d.action, self.config.lot)
            if state.position != d.position_after:
                # The checkpoint and the table disagree: they are not of the same history (a
                # database restored from elsewhere?). Trading on would be guessing: crash, and
                # let vigil's restart budget bring a person in.
                raise RuntimeError(
                    f"decision of tick {d.tick_id} says position {d.position_after}, replaying "
                    f"from the checkpoint gives {state.position}: the checkpoint and "
                    f"{self.config.db_path} disagree"
                )
        self.state = state
        self.unsent = {d.tick_id: True for d in self.decisions.pending()}
        if saved is None and not replayed:
            log.info("starting fresh: no checkpoint, no decisions in %s", self.config.db_path)
        else:
            log.info(
                "resumed from checkpoint: last_tick=%s position=%s pnl=%.2f trades=%s "
                "(checkpoint version %s, %d decision(s) past it replayed, %d order(s) to confirm)",
                state.last_tick, state.position, state.pnl, state.trades,
                self.checkpoint.version, len(replayed), len(self.unsent),
            )
        if replayed:
            self.save_checkpoint()

    # -- the main loop ------------------------------------------------------------------------

    def run(self) -> None:
        self.resume()
        vigil_agent.ready()
        while not self.stopping.is_set():
            try:
                self.send_unsent_orders()  # first: orders keep the order of their decisions
                ticks = self.exchange.fetch_ticks(self.config.symbol, self.state.last_tick)
                for tick in ticks:
                    if self.stopping.is_set():
                        break
                    self.process(tick)
                self._paused = ""
                if not ticks:
                    vigil_agent.heartbeat()  # polled the exchange: alive, nothing new yet
                    self.stopping.wait(self.config.poll_interval)
            except pybreaker.CircuitBreakerError as e:
                # Layer 5: the breaker is open — the exchange is not called until it lets a
                # trial call through. vigil was told (degraded, until the trial) by
                # VigilListener; no heartbeat is sent meanwhile, and none is needed.
                if str(e) != self._paused:  # once per change, not once a second
                    log.warning("exchange paused (%s); waiting", e)
                    self._paused = str(e)
                self.stopping.wait(1.0)
            except ExchangeError as e:
                # tenacity gave up (the breaker may not be open yet): wait a little, go again.
                log.warning("exchange unavailable (%s); waiting", e)
                self.stopping.wait(1.0)
        self.save_checkpoint()
        log.info("stopped at tick %s, position %s", self.state.last_tick, self.state.position)

    def process(self, tick: Dict[str, Any]) -> None:
        tick_id, price = int(tick["id"]), float(tick["price"])
        last = self.state.last_tick
        if last is not None and tick_id != last + 1:
            # The exchange gives every tick after `last`, in order: a gap is a bug somewhere.
            raise RuntimeError(f"tick {tick_id} follows tick {last}: ticks were skipped")
        action = decide(self.state, price, self.config.max_lots)
        state = apply(self.state, tick_id, price, action, self.config.lot)
        decision = Decision(
            tick_id=tick_id, symbol=self.config.symbol, ts=int(tick["ts"]), price=price,
            action=action, position_after=state.position,
            order_state="none" if action == "hold" else "pending",
        )
        self.decisions.record(decision)  # 1. the decision, durably (once per tick, ever)
        if action != "hold":
            self.faults.point("decision")
        self.state = state
        self.save_checkpoint()  # 2. then the checkpoint
        log.info("tick=%d price=%.2f action=%s position=%d pnl=%.2f trades=%d",
                 tick_id, price, action, state.position, state.pnl, state.trades)
        vigil_agent.progress(
            f"tick {tick_id}: {action}, position {state.position}, pnl {state.pnl:.2f}"
        )
        if action != "hold":
            self.unsent[tick_id] = False
            self.send_unsent_orders()  # 3. then the order

    def send_unsent_orders(self) -> None:
        """Send the orders decided but not confirmed yet, oldest first; an exchange error
        propagates (they stay unsent, and are sent first next time)."""
        if not self.unsent:
            return
        pending = {d.tick_id: d for d in self.decisions.pending()}
        for tick_id in sorted(self.unsent):
            d = pending.get(tick_id)
            if d is None:  # confirmed already
                del self.unsent[tick_id]
                continue
            filled = None
            if self.unsent[tick_id]:
                # Its fate is unknown: ask before sending, so the exchange never sees it twice.
                filled = self.exchange.find_order(d.client_order_id)
                if filled:
                    log.info("order %s was filled before the restart", d.client_order_id)
            if filled is None:
                try:
                    filled = self.exchange.place_order(d, self.config.lot)
                except RateLimited:
                    raise  # refused, not acted on: simply send it again next time
                except Exception:
                    # A network error (or the breaker tripping on one): it may have got
                    # through. Ask the exchange next time before sending it again.
                    self.unsent[tick_id] = True
                    raise
                log.info("order %s: %s %s filled @ %s", d.client_order_id, d.action,
                         filled["qty"], filled["price"])
                self.faults.point("order")
            self.decisions.mark_filled(tick_id)
            del self.unsent[tick_id]

    def save_checkpoint(self) -> None:
        try:
            self.checkpoint.save(self.state.to_checkpoint())
        except vigil_agent.CheckpointConflict as e:
            # Another writer saved a newer version (a second copy of this bot?). Our state is
            # rebuilt from the decisions table, which is the truth: take vigil's version number
            # and save ours on top, saying so.
            log.warning("checkpoint conflict (%s): saving this run's state on top", e)
            self.checkpoint.load()
            self.checkpoint.save(self.state.to_checkpoint())

    def stop(self, signum: int, frame: Optional[FrameType]) -> None:
        log.info("signal %s: stopping after this tick", signum)
        self.stopping.set()


def main(argv: Optional[Sequence[str]] = None) -> None:
    config = Config.from_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format=f"%(asctime)s {config.symbol} %(levelname)s %(name)s: %(message)s",
    )
    bot = ResilientTrader(config)
    signal.signal(signal.SIGTERM, bot.stop)
    signal.signal(signal.SIGINT, bot.stop)
    log.info("trading %s on %s, decisions in %s (pid %d)", config.symbol, config.exchange_url,
             config.db_path, os.getpid())
    bot.run()


if __name__ == "__main__":
    main()
