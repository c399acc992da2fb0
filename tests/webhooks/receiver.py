"""A Standard Webhooks test receiver for the webhook delivery tests.

It records every delivery and checks its signature with the official `standardwebhooks`
package, so the tests judge our signing against the reference implementation rather than
against our own code. Run `python receiver.py --port PORT` (0 picks a free port); it prints
`listening http://127.0.0.1:<port>` once it serves.

  POST /_control/config   {"secret": "whsec_...", "fail": N, "status": S, "delay": D}, any
                          field optional: the secret to verify with; the next N deliveries
                          answer S (default 500); every answer waits D seconds (default 0)
  GET  /_control/received {"items": [...]} every delivery, in arrival order
  any other POST          a delivery: recorded, then answered 204 (or S while failures remain)
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

lock = threading.Lock()
state = {"secret": None, "fail": 0, "status": 500, "delay": 0, "items": []}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def reply(self, status, payload=None):
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_control/received":
            with lock:
                self.reply(200, {"items": list(state["items"])})
        else:
            self.reply(404)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/_control/config":
            config = json.loads(raw or b"{}")
            with lock:
                state.update({k: config[k] for k in ("secret", "fail", "status", "delay") if k in config})
            return self.reply(204)
        if self.path.startswith("/_control/"):
            return self.reply(404)
        with lock:
            secret = state["secret"]
            status = 204
            if state["fail"] > 0:
                state["fail"] -= 1
                status = state["status"]
        verified, error = False, "no secret configured"
        if secret:
            try:
                Webhook(secret).verify(raw, dict(self.headers.items()), json_parse=False)
                verified, error = True, None
            except Exception as e:
                error = str(e) or type(e).__name__
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        record = {
            "path": self.path,
            "id": self.headers.get("webhook-id"),
            "timestamp": self.headers.get("webhook-timestamp"),
            "signature": self.headers.get("webhook-signature"),
            "verified": verified,
            "error": error,
            "body": body,
            "answered": status,
        }
        with lock:
            state["items"].append(record)
            delay = state["delay"]
        time.sleep(delay)
        self.reply(status)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    server = ThreadingHTTPServer(("127.0.0.1", parser.parse_args().port), Handler)
    print(f"listening http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
