#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) that appends every message it accepts to LOG as one JSON
line: {"from", "to", "data"}.

usage: smtp_sink.py PORT LOG
"""
import json
import sys
import time

from aiosmtpd.controller import Controller


class Keep:
    async def handle_DATA(self, server, session, envelope):
        with open(sys.argv[2], "a") as log:
            log.write(json.dumps({
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", "replace"),
            }) + "\n")
        return "250 Message accepted for delivery"


controller = Controller(Keep(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("listening", flush=True)
while True:
    time.sleep(3600)
