#!/usr/bin/env python3
"""Stand-ins for the hosted services vigil notifies, answering in each one's documented shape:

- Slack incoming webhooks: POST /services/T../B../X.. with {"text": ...}, answered 200 `ok`;
- the Telegram Bot API: POST /bot<token>/sendMessage with {"chat_id", "text"}, answered
  {"ok": true, "result": {"message_id": N, ...}} (an unknown token: 401 {"ok": false, ...});
- any other path: a generic webhook, answered 200 {"received": true}.

Every request is appended to LOG as one JSON line: {"path", "headers", "body"}, after which
it is answered. --fail N answers the first N requests 503 (Telegram: 429 with retry_after 1).

usage: http_sink.py PORT LOG [--fail N] [--telegram-token T]
"""
import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = argparse.ArgumentParser()
args.add_argument("port", type=int)
args.add_argument("log")
args.add_argument("--fail", type=int, default=0)
args.add_argument("--telegram-token", default="")
opts = args.parse_args()
seen = {"n": 0, "messages": 0}


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length).decode("utf-8", "replace")
        seen["n"] += 1
        failing = seen["n"] <= opts.fail
        telegram = self.path.startswith("/bot") and self.path.endswith("/sendMessage")
        with open(opts.log, "a") as log:
            log.write(json.dumps({
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
                "answered": 503 if failing else 200,
            }) + "\n")
        if telegram:
            token = self.path[len("/bot"):-len("/sendMessage")]
            if failing:
                self.answer(429, {"ok": False, "error_code": 429,
                                  "description": "Too Many Requests: retry after 1",
                                  "parameters": {"retry_after": 1}})
            elif opts.telegram_token and token != opts.telegram_token:
                self.answer(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            else:
                seen["messages"] += 1
                sent = json.loads(body)
                self.answer(200, {"ok": True, "result": {
                    "message_id": seen["messages"],
                    "chat": {"id": sent.get("chat_id")},
                    "text": sent.get("text")}})
        elif failing:
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"unavailable")
        elif self.path.startswith("/services/"):
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")
        else:
            self.answer(200, {"received": True})

    def answer(self, code, value):
        data = json.dumps(value).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


server = ThreadingHTTPServer(("127.0.0.1", opts.port), Sink)
print("listening", flush=True)
sys.stdout.close()
server.serve_forever()
