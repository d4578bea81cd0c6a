"""How long ``vigil_agent.heartbeat()`` takes over the notify socket.

Binds a real unix datagram socket in a temporary directory, points ``NOTIFY_SOCKET`` at it,
drains it from a separate process (as vigil's reader thread would), and times 100,000 calls
of the module-level ``heartbeat()`` one by one. Prints the median and the 99th percentile.

    python bench_heartbeat.py [--calls 100000] [--gap-us 50]

The goal is a median well under 50 µs. Calls are spaced by an untimed pause (``--gap-us``,
default 50 µs) so that the reader mostly keeps up; with ``--gap-us 0`` the socket's queue
(``net.unix.max_dgram_qlen`` datagrams) fills and the surplus heartbeats are dropped, which
the figures then include.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from multiprocessing import Event, Process, Value
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))


def drain(path: str, ready, stop, received) -> None:  # type: ignore[no-untyped-def]
    """Read datagrams until told to stop (vigil's reader thread, in its own process)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    # A queue deep enough that a reader in Python keeps up with the sender, as vigil's does
    # (SO_RCVBUFFORCE needs root; otherwise the kernel's rmem_max caps it).
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 512 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.settimeout(0.2)
    ready.set()
    count = 0
    while True:
        try:
            sock.recv(4096)
            count += 1
        except socket.timeout:
            if stop.is_set():
                break
    received.value = count
    sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument(
        "--gap-us",
        type=float,
        default=50.0,
        help="untimed pause between calls (µs), so the reader keeps up as vigil's does with a "
        "real bot; 0 floods the socket, and heartbeats that find the queue full are dropped",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        path = os.path.join(tmp, "notify.sock")
        ready, stop, received = Event(), Event(), Value("q", -1)
        reader = Process(target=drain, args=(path, ready, stop, received), daemon=True)
        reader.start()
        if not ready.wait(10):
            print("the reader did not start", file=sys.stderr)
            return 1
        for name in ("VIGIL_URL", "VIGIL_AGENT", "VIGIL_AGENT_TOKEN"):
            os.environ.pop(name, None)
        os.environ["NOTIFY_SOCKET"] = path

        import vigil_agent

        # A heartbeat dropped because the queue is full is counted below, not logged.
        logging.getLogger("vigil_agent").setLevel(logging.ERROR)

        heartbeat = vigil_agent.heartbeat
        for _ in range(1000):  # warm up: the socket is opened and cached by the first call
            heartbeat()

        clock = time.perf_counter_ns
        gap_ns = int(args.gap_us * 1000)
        samples = [0] * args.calls
        for i in range(args.calls):
            t0 = clock()
            heartbeat()
            t1 = clock()
            samples[i] = t1 - t0
            while clock() - t1 < gap_ns:
                pass

        stop.set()
        reader.join(30)

    samples.sort()
    median_us = statistics.median(samples) / 1000
    p99_us = samples[int(len(samples) * 0.99) - 1] / 1000
    mean_us = sum(samples) / len(samples) / 1000
    print(f"heartbeat() over the notify socket, {args.calls} calls, {args.gap_us:g} µs apart:")
    max_us = samples[-1] / 1000
    print(
        f"  median {median_us:.2f} µs   p99 {p99_us:.2f} µs   "
        f"mean {mean_us:.2f} µs   max {max_us:.1f} µs"
    )
    sent = args.calls + 1000
    print(
        f"  delivered {received.value} of {sent} datagrams "
        f"({sent - received.value} dropped: queue full)"
    )
    print(f"  goal: ≤ 50 µs → {'met' if median_us <= 50 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
