#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) that appends every message it accepts to LOG as one JSON
line: {"from", "to", "data", "tls"}. With --tls CERT KEY it offers STARTTLS and refuses mail
before it (require_starttls), as a submission server on port 587 does.

usage: smtp_sink.py PORT LOG [--tls CERT KEY]
"""
import json
import ssl
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
                "tls": session.ssl is not None,
            }) + "\n")
        return "250 Message accepted for delivery"


options = {}
if len(sys.argv) > 3 and sys.argv[3] == "--tls":
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(sys.argv[4], sys.argv[5])
    options = {"tls_context": context, "require_starttls": True}
controller = Controller(Keep(), hostname="127.0.0.1", port=int(sys.argv[1]), **options)
controller.start()
print("listening", flush=True)
while True:
    time.sleep(3600)
