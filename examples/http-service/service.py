"""A small scoring service for the HTTP agent example, on 127.0.0.1.

POST /score with {"text": "..."} returns {"words", "positive", "negative", "score"}. The service
requires "Authorization: Bearer <token>" when SERVICE_TOKEN is set. Usage: service.py PORT
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POSITIVE = {"good", "great", "fast", "love", "happy", "excellent", "works", "thanks"}
NEGATIVE = {"bad", "slow", "broken", "hate", "crash", "error", "fails", "angry"}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        token = os.environ.get("SERVICE_TOKEN")
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            self.reply(401, {"error": "missing or wrong bearer token"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            text = json.loads(self.rfile.read(length))["text"]
        except (ValueError, KeyError, TypeError):
            self.reply(400, {"error": "expected a JSON body with a \"text\" string"})
            return
        words = [word.strip(".,!?").lower() for word in str(text).split()]
        positive = sum(word in POSITIVE for word in words)
        negative = sum(word in NEGATIVE for word in words)
        score = (positive - negative) / max(len(words), 1)
        self.reply(200, {"words": len(words), "positive": positive, "negative": negative, "score": score})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
