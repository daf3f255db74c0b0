"""A status-callback receiver for the demo: checks each Standard Webhooks signature with the
app's whsec_ secret and appends the event, with the check's result, to a JSON-lines file.

usage: demo-receiver.py PORT WHSEC_SECRET OUTPUT_FILE
"""

import base64
import hashlib
import hmac
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT, SECRET, OUTPUT = int(sys.argv[1]), sys.argv[2], sys.argv[3]
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        msg_id = self.headers.get("webhook-id", "")
        timestamp = self.headers.get("webhook-timestamp", "")
        signed = f"{msg_id}.{timestamp}.".encode() + body
        expected = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
        offered = [s.split(",", 1)[-1] for s in self.headers.get("webhook-signature", "").split()]
        valid = any(hmac.compare_digest(expected, s) for s in offered)
        event = json.loads(body)
        with open(OUTPUT, "a", encoding="utf-8") as out:
            out.write(json.dumps({"webhook-id": msg_id, "signature": "valid" if valid else "INVALID",
                                  "type": event["type"], "status": event["data"]["status"],
                                  "delivery": event["data"]["delivery"]}) + "\n")
        self.send_response(204 if valid else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", PORT), Receiver).serve_forever()
