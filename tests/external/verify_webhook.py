"""A subscriber for qikchat-relay's webhooks: verifies each delivery, then takes it.

    pip install standardwebhooks
    WEBHOOK_SECRET=whsec_... python3 tests/external/verify_webhook.py   # listens on port 8000

WEBHOOK_SECRET is the caller's `secret` from `[clients.<name>.webhooks]` in the callers file.
Answers 204 to a delivery whose signature verifies, 401 to anything else.
"""

import os
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])
seen = set()  # delivery is at least once: keep handled webhook-ids (in your database, for real)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            # Checks the HMAC over "{webhook-id}.{webhook-timestamp}.{body}" and the timestamp's age.
            event = webhook.verify(body, self.headers)
        except (WebhookVerificationError, ValueError):
            self.send_response(401)
            self.end_headers()
            return
        if self.headers["webhook-id"] not in seen:
            seen.add(self.headers["webhook-id"])
            data = event["data"]
            print(event["type"], data["id"], data.get("status") or data.get("from"), flush=True)
        self.send_response(204)
        self.end_headers()


HTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
