#!/usr/bin/env python3
"""A local HTTP sink for the demo: prints every request it receives and answers 204.
Stands in for GitHub's API and a chat webhook. Usage: sink.py PORT"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        auth = self.headers.get("Authorization")
        shown = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
        if auth:
            shown["Authorization"] = auth.split(" ")[0] + " <redacted>"
        print(f"--> {self.command} {self.path}", flush=True)
        print("    headers: " + json.dumps(shown), flush=True)
        print("    body:    " + body.decode(errors="replace"), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
