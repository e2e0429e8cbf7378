#!/usr/bin/env python3
"""A webhook receiver for the README tour: prints each iotstream event and checks its signature.

Usage: scripts/webhook-echo.py [PORT] (default 9000); set IOTSTREAM_WEBHOOK_SECRET to verify.
"""
import hashlib
import hmac
import http.server
import json
import os
import sys

SECRET = os.environ.get("IOTSTREAM_WEBHOOK_SECRET", "").encode()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(expected, self.headers.get("X-Iotstream-Signature", ""))
        event = json.loads(body)
        alert = event["alert"]
        print(f'{self.headers["X-Iotstream-Event"]:20} {alert["deviceId"]:12} {alert["rule"]:14} '
              f'{alert["message"]}  [signature {"ok" if ok else "BAD"}]', flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
print(f"listening on http://127.0.0.1:{port}/", flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
