"""A tiny web server for the lab that tells each client which address it came from.

`python3 -m http.server` works in a lab too (the lab's hosts resolve by files, see dns.py); this
one's page says what the server saw, which is how the demo shows masquerading: the client fetches
the page and reads the firewall's outside address. With `--name` the page is that name alone, one
line: the load-balancer lab (netns/lb.yaml) counts which backend answered each request.

    python -m fw.lab.webserver [--port 80] [--bind ADDRESS] [--seconds N] [--name NAME]

It stops by itself after `--seconds` (600 by default; 0: never), so a server left running in a
lab does not outlive the demo by hours; it says so when it starts and again when it stops.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SeenFrom(BaseHTTPRequestHandler):
    name: str | None = None  # set by --name: the page is the name alone

    def do_GET(self) -> None:
        host, port = self.client_address[:2]
        host = host.removeprefix("::ffff:")  # an IPv4 client on the dual-stack socket
        text = f"hello from fwlab's lab server: you came from {host} port {port}"
        body = f"{self.name if self.name else text}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        print(f"GET {self.path} from {host}:{port}", flush=True)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: do_GET prints one line of its own."""


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        """Bind without HTTPServer's getfqdn() (no DNS in a lab)."""
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class Server6(Server):
    address_family = socket.AF_INET6


def main() -> None:
    parser = argparse.ArgumentParser(description="fwlab's lab web server")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--bind", default="::")
    parser.add_argument("--seconds", type=float, default=600.0,
                        help="stop after this long (default 600; 0: never)")
    parser.add_argument("--name", help="answer every request with this name alone")
    args = parser.parse_args()
    cls = Server6 if ":" in args.bind else Server
    handler = type("Named", (SeenFrom,), {"name": args.name}) if args.name else SeenFrom
    with cls((args.bind, args.port), handler) as server:
        server.timeout = 0.5
        print(f"listening on {args.bind} port {args.port}; {_lifetime(args.seconds)}", flush=True)
        end = time.monotonic() + args.seconds if args.seconds > 0 else float("inf")
        while time.monotonic() < end:
            server.handle_request()
    print(f"stopped after {args.seconds:g} s, as --seconds said; start it again to go on",
          flush=True)
    sys.exit(0)


def _lifetime(seconds: float) -> str:
    if seconds <= 0:
        return "runs until stopped"
    return f"stops by itself after {seconds:g} s (--seconds N to change, 0: never)"


if __name__ == "__main__":
    main()
