#!/usr/bin/env python3
"""A server that records the raw requests it receives, for specs about what
goes on the wire.

    python3 recorder.py PORT_FILE LOG_FILE PARENT_PID

Listens on 127.0.0.1 (an ephemeral port, written to PORT_FILE after its own
pid and a space), appends one
JSON line per request to LOG_FILE: {"method", "target" (the request target
exactly as sent), "authorization" (whether the header came)}, and answers
every request 200 with an empty JSON array; a request for /_echo... gets the
Authorization header it sent back, in a JSON body and in an X-Echo header.
Exits on SIGTERM, or when PARENT_PID is gone.
"""
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        entry = {"method": self.command, "target": self.path,
                 "authorization": self.headers.get("Authorization") is not None}
        with open(self.server.log_file, "a") as f:
            f.write(json.dumps(entry) + "\n")
        body = b"[]"
        echo = None
        if self.path.startswith("/_echo"):
            # A server that echoes the credential it was sent, in its body
            # and in a header, as some error pages do.
            echo = self.headers.get("Authorization") or ""
            body = json.dumps({"authorization": echo, "message": f"bad credentials: {echo}!"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if echo is not None:
            self.send_header("X-Echo", echo)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = answer


def main():
    port_file, log_file, parent = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.log_file = log_file
    open(log_file, "a").close()
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()} {server.server_address[1]}\n")
    os.rename(tmp, port_file)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    def watch_parent():
        while True:
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                break
            time.sleep(1)
        server.shutdown()

    threading.Thread(target=watch_parent, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
