"""A fake Docker Engine API on a unix socket (http.server in a thread), and realistic inspect documents."""

from __future__ import annotations

import json
import shutil
import socketserver
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

CID = "4c01db0b339c" + "5" * 52  # a 64-hex container id
CID2 = "9e" * 32
IMAGE_HEX = "e4720093a3c1" + "3" * 52
DIGEST = "sha256:" + "ab" * 32

Route = tuple[int, Any] | Callable[[BaseHTTPRequestHandler], None]


def docker_inspect(**over: Any) -> dict[str, Any]:
    """``docker inspect`` of a compose service (trimmed to what matters, shapes as Docker 27 writes them)."""
    doc: dict[str, Any] = {
        "Id": CID,
        "Created": "2025-11-20T10:00:00.123456789Z",
        "Path": "/docker-entrypoint.sh",
        "Args": ["nginx", "-g", "daemon off;"],
        "State": {"Status": "running", "Running": True, "Pid": 4242},
        "Image": f"sha256:{IMAGE_HEX}",
        "Name": "/shop-web-1",
        "RestartCount": 0,
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": {
            "NetworkMode": "shop_default",
            "PidMode": "",
            "IpcMode": "private",
            "Privileged": False,
            "CapAdd": None,
        },
        "Config": {
            "Hostname": "4c01db0b339c",
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin", "NGINX_VERSION=1.25.3"],
            "Image": "nginx:1.25",
            "Labels": {
                "com.docker.compose.project": "shop",
                "com.docker.compose.service": "web",
                "maintainer": "NGINX Docker Maintainers <docker-maint@nginx.com>",
            },
        },
        "NetworkSettings": {"Networks": {"shop_default": {"IPAddress": "172.18.0.2"}}},
    }
    doc.update(over)
    return doc


def podman_inspect(**over: Any) -> dict[str, Any]:
    """Podman's Docker-compatible inspect (``podman system service``): fully qualified image, ``/`` name."""
    doc: dict[str, Any] = {
        "Id": CID2,
        "Created": "2025-11-20T10:00:00.5Z",
        "Path": "sleep",
        "Args": ["infinity"],
        "State": {"Status": "running", "Running": True, "Pid": 777},
        "Image": f"sha256:{IMAGE_HEX}",
        "Name": "/toolbox",
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {"NetworkMode": "host", "PidMode": "host", "IpcMode": "shareable", "Privileged": True},
        "Config": {
            "Hostname": "toolbox",
            "Image": "docker.io/library/alpine:3.20",
            "Labels": {"io.containers.autoupdate": "registry"},
            "StopSignal": "15",
        },
    }
    doc.update(over)
    return doc


def image_inspect(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "Id": f"sha256:{IMAGE_HEX}",
        "RepoTags": ["nginx:1.25", "nginx:latest"],
        "RepoDigests": [f"nginx@{DIGEST}"],
        "Architecture": "amd64",
    }
    doc.update(over)
    return doc


class FakeDockerAPI:
    """Routes: path -> (status, JSON-able body or bytes), or a callable that writes the answer itself."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.stop = threading.Event()  # set at shutdown: handlers that hang wait on it
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                route = fake.routes.get(self.path)
                if route is None:
                    route = (404, {"message": f"No such container: {self.path}"})
                if callable(route):
                    route(self)
                    return
                status, body = route
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:  # a unix socket has no client address
                pass

        class Server(socketserver.ThreadingUnixStreamServer):
            daemon_threads = True
            block_on_close = False

        self.server = Server(path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def short_dir() -> Iterator[Path]:
    """A short directory: a unix socket path has at most 107 bytes, and pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="smeta", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def fake_docker() -> Iterator[FakeDockerAPI]:
    with short_dir() as d:
        fake = FakeDockerAPI(str(d / "docker.sock"))
        try:
            yield fake
        finally:
            fake.close()


def container_path(full_id: str = CID) -> str:
    return f"/containers/{full_id}/json"


def image_path(image_hex: str = IMAGE_HEX) -> str:
    return f"/images/sha256:{image_hex}/json"
