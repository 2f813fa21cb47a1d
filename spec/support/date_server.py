#!/usr/bin/env python3
"""A GitHub-like server whose Date header is whatever the spec asks for.

Every request gets 200 with one rate-limit budget (limit 5000, remaining
4000, used 1000, reset RESET_IN seconds from now on the machine's clock) in
the x-ratelimit-* headers and in a /rate_limit body, and the Date header
given (--date; "none" sends no Date at all). For the clock-skew specs: a
broken or hostile Date must leave the figures and the reset as given.

Usage: date_server.py --date TEXT --port-file FILE [--reset-in SECONDS] [--parent-pid PID]
"""
import argparse
import http.server
import json
import os
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--date", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--reset-in", type=int, default=1800)
    ap.add_argument("--parent-pid", type=int)
    args = ap.parse_args()
    reset = int(time.time()) + args.reset_in
    budget = {"limit": 5000, "remaining": 4000, "used": 1000, "reset": reset}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def date_time_string(self, timestamp=None):  # the Date header's value
            return args.date

        def send_header(self, keyword, value):
            if keyword.lower() == "date" and args.date == "none":
                return
            super().send_header(keyword, value)

        def do_GET(self):
            body = json.dumps({"resources": {"core": dict(budget, resource="core")},
                               "rate": dict(budget)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in budget.items():
                self.send_header(f"x-ratelimit-{k}", str(v))
            self.send_header("x-ratelimit-resource", "core")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[1]} {reset}\n")
    os.rename(tmp, args.port_file)
    # Bounded: gone with its parent, and after ten minutes in any case.
    for _ in range(600):
        time.sleep(1)
        if args.parent_pid and not os.path.exists(f"/proc/{args.parent_pid}"):
            break
    server.shutdown()


if __name__ == "__main__":
    main()
