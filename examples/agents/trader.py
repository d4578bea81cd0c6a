#!/usr/bin/env python3
"""A toy trading agent for vigil's examples (standard library only).

Every second it "reads a price", decides, and prints the decision. With --crash-after N it
dies with a Python traceback after N seconds, the way a real bot does when its exchange
connection drops.
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
    args = parser.parse_args()

    started = time.time()
    print(f"{args.symbol}: {os.environ.get('VIGIL_AGENT', '?')} started, pid {os.getpid()}", flush=True)
    price = 100.0
    while True:
        price *= 1 + random.uniform(-0.01, 0.01)
        decision = random.choice(["buy", "sell", "hold", "hold"])
        print(f"{time.strftime('%H:%M:%S')} {args.symbol} price={price:.2f} decision={decision}", flush=True)
        if args.crash_after and time.time() - started >= args.crash_after:
            raise ConnectionError(f"{args.symbol}: exchange websocket closed unexpectedly")
        time.sleep(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
