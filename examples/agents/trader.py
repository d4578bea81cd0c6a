#!/usr/bin/env python3
"""A toy trading agent for vigil's examples (standard library only).

Every second it "reads a price", decides, prints the decision and touches its heartbeat
file. With --crash-after N it dies with a Python traceback after N seconds, the way a real
bot does when its exchange connection drops; with --hang-after N it stays alive but stops
working (no decisions, no heartbeat), the way a bot blocked on a lock or a dead socket does.
"""

import argparse
import os
import random
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--crash-after", type=float, default=0.0,
                        help="raise an error after this many seconds (0 = never)")
    parser.add_argument("--hang-after", type=float, default=0.0,
                        help="stop working, but stay alive, after this many seconds (0 = never)")
    parser.add_argument("--heartbeat", help="a file to touch after every decision")
    args = parser.parse_args()

    started = time.time()
    print(f"{args.symbol}: {os.environ.get('VIGIL_AGENT', '?')} started, pid {os.getpid()}", flush=True)
    price = 100.0
    while True:
        price *= 1 + random.uniform(-0.01, 0.01)
        decision = random.choice(["buy", "sell", "hold", "hold"])
        print(f"{time.strftime('%H:%M:%S')} {args.symbol} price={price:.2f} decision={decision}", flush=True)
        if args.heartbeat:
            with open(args.heartbeat, "a"):
                os.utime(args.heartbeat)
        if args.crash_after and time.time() - started >= args.crash_after:
            raise ConnectionError(f"{args.symbol}: exchange websocket closed unexpectedly")
        if args.hang_after and time.time() - started >= args.hang_after:
            print(f"{args.symbol}: waiting for the order book lock...", flush=True)
            time.sleep(10**9)
        time.sleep(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
