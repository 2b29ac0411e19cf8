"""The Docker Engine API client against a fake daemon on a unix socket: docker and podman shapes, Kubernetes
labels, and a daemon that is slow, hung, huge, malformed or lying."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

import orjson
import pytest

from sentinel.containers.docker_api import DockerClient, ImageFacts, meta_from_inspect
from sentinel.containers.metadata import (
    LABELS_MAX,
    MOUNTS_MAX,
    LookupTimeout,
    Mount,
    RefusedAnswer,
    RuntimeUnavailable,
    SocketMissing,
)
from tests.unit.container_meta_support import (
    CID,
    CID2,
    DIGEST,
    IMAGE_HEX,
    FakeDockerAPI,
    container_path,
    docker_inspect,
    fake_docker,
    image_inspect,
    image_path,
    podman_inspect,
    short_dir,
)


@pytest.fixture
def daemon() -> FakeDockerAPI:
    with fake_docker() as fake:
        yield fake


def test_docker_container(daemon: FakeDockerAPI) -> None:
    daemon.routes[container_path()] = (200, docker_inspect())
    daemon.routes[image_path()] = (200, image_inspect())
    meta = DockerClient(daemon.path).inspect(CID, 2.0)
    assert meta is not None
    assert meta.full_id == CID
    assert meta.source == f"docker:{daemon.path}"
    assert meta.name == "shop-web-1"
    assert (meta.image, meta.image_repository, meta.image_tag) == ("nginx:1.25", "nginx", "1.25")
    assert meta.image_digest == DIGEST  # from the image's RepoDigests, matched by repository
    assert meta.image_id == IMAGE_HEX
    assert meta.labels == (
        ("com.docker.compose.project", "shop"),
        ("com.docker.compose.service", "web"),
        ("maintainer", "NGINX Docker Maintainers <docker-maint@nginx.com>"),
    )
    assert not meta.labels_truncated
    assert (meta.privileged, meta.host_network, meta.host_pid, meta.host_ipc) == (False, False, False, False)
    assert meta.pod is None
    assert meta.label("com.docker.compose.service") == "web"
    assert daemon.requests == [container_path(), image_path()]  # no API version in the path


def test_podman_compatible_container(daemon: FakeDockerAPI) -> None:
    daemon.routes[container_path(CID2)] = (200, podman_inspect())
    daemon.routes[image_path()] = (
        200,
        image_inspect(
            RepoTags=["docker.io/library/alpine:3.20"], RepoDigests=[f"docker.io/library/alpine@{DIGEST}"]
        ),
    )
    meta = DockerClient(daemon.path, "podman").inspect(CID2, 2.0)
    assert meta is not None
    assert meta.source == f"podman:{daemon.path}"
    assert meta.name == "toolbox"
    assert (meta.image_repository, meta.image_tag, meta.image_digest) == (
        "docker.io/library/alpine",
        "3.20",
        DIGEST,
    )
    assert (meta.privileged, meta.host_network, meta.host_pid, meta.host_ipc) == (True, True, True, False)


def test_image_facts_are_cached_per_image(daemon: FakeDockerAPI) -> None:
    daemon.routes[container_path()] = (200, docker_inspect())
    daemon.routes[container_path(CID2)] = (200, docker_inspect(Id=CID2))
    daemon.routes[image_path()] = (200, image_inspect())
    client = DockerClient(daemon.path)
    assert client.inspect(CID, 2.0) is not None
    assert client.inspect(CID2, 2.0) is not None
    assert daemon.requests.count(image_path()) == 1


def test_image_inspect_failing_leaves_the_answer_without_digest(daemon: FakeDockerAPI) -> None:
    daemon.routes[container_path()] = (200, docker_inspect())
    daemon.routes[image_path()] = (500, {"message": "boom"})
    meta = DockerClient(daemon.path).inspect(CID, 2.0)
    assert meta is not None and meta.image_repository == "nginx" and meta.image_digest == ""


def test_digest_pinned_reference(daemon: FakeDockerAPI) -> None:
    doc = docker_inspect(Config={"Image": f"localhost:5000/team/app@{DIGEST}"})
    daemon.routes[container_path()] = (200, doc)
    meta = DockerClient(daemon.path).inspect(CID, 2.0)
    assert meta is not None
    assert (meta.image_repository, meta.image_tag, meta.image_digest) == (
        "localhost:5000/team/app",
        "",
        DIGEST,
    )


def test_started_by_image_id_takes_the_images_tags(daemon: FakeDockerAPI) -> None:
    daemon.routes[container_path()] = (200, docker_inspect(Config={"Image": f"sha256:{IMAGE_HEX}"}))
    daemon.routes[image_path()] = (200, image_inspect(RepoTags=["reg.io:443/ns/app:v2"], RepoDigests=[]))
    meta = DockerClient(daemon.path).inspect(CID, 2.0)
    assert meta is not None
    assert (meta.image_repository, meta.image_tag, meta.image_digest) == ("reg.io:443/ns/app", "v2", "")


def test_started_by_a_short_image_id_is_no_repository(daemon: FakeDockerAPI) -> None:
    daemon.routes[container_path()] = (200, docker_inspect(Config={"Image": IMAGE_HEX[:12]}))
    daemon.routes[image_path()] = (200, image_inspect(RepoTags=[], RepoDigests=[]))
    meta = DockerClient(daemon.path).inspect(CID, 2.0)
    assert meta is not None and meta.image == IMAGE_HEX[:12]
    assert (meta.image_repository, meta.image_tag, meta.image_id) == ("", "", IMAGE_HEX)
    daemon.routes[image_path()] = (200, image_inspect())
    meta = DockerClient(daemon.path).inspect(CID, 2.0)
    assert meta is not None and (meta.image_repository, meta.image_tag) == ("nginx", "1.25")


def test_kubernetes_labels_name_the_pod(daemon: FakeDockerAPI) -> None:
    labels = {
        "io.kubernetes.pod.name": "web-7d9f",
        "io.kubernetes.pod.namespace": "shop",
        "io.kubernetes.pod.uid": "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9",
        "io.kubernetes.container.name": "web",
        "io.kubernetes.sandbox.id": "b" * 64,
    }
    daemon.routes[container_path()] = (200, docker_inspect(Config={"Image": "nginx", "Labels": labels}))
    meta = DockerClient(daemon.path).inspect(CID, 2.0)
    assert meta is not None and meta.pod is not None
    assert (meta.pod.name, meta.pod.namespace, meta.pod.uid) == (
        "web-7d9f",
        "shop",
        labels["io.kubernetes.pod.uid"],
    )
    assert meta.pod.sandbox_id == "b" * 64
    assert meta.image_tag == "latest"
    fields = meta.falco_fields()
    assert fields["k8s.pod.name"] == "web-7d9f" and fields["k8s.ns.name"] == "shop"
    assert fields["container.image.repository"] == "nginx" and fields["k8s.pod.sandbox_id"] == "b" * 12


def test_unknown_container_is_none(daemon: FakeDockerAPI) -> None:
    assert DockerClient(daemon.path).inspect(CID, 2.0) is None


def test_server_error_is_refused(daemon: FakeDockerAPI) -> None:
    daemon.routes[container_path()] = (500, {"message": "server error"})
    with pytest.raises(RefusedAnswer, match="HTTP 500"):
        DockerClient(daemon.path).inspect(CID, 2.0)


def test_an_answer_for_another_container_is_refused(daemon: FakeDockerAPI) -> None:
    daemon.routes[container_path()] = (200, docker_inspect(Id=CID2))
    with pytest.raises(RefusedAnswer, match="another container"):
        DockerClient(daemon.path).inspect(CID, 2.0)


def test_chunked_answer(daemon: FakeDockerAPI) -> None:
    body = json.dumps(docker_inspect()).encode()

    def chunked(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(0, len(body), 100):
            part = body[i : i + 100]
            h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        h.wfile.write(b"0\r\n\r\n")

    daemon.routes[container_path()] = chunked
    meta = DockerClient(daemon.path).inspect(CID, 2.0)
    assert meta is not None and meta.name == "shop-web-1"


# ---- hostile answers -----------------------------------------------------------------------------------


def _meta(doc: object) -> object:
    return meta_from_inspect(doc, CID, "docker:/x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"Name": 5, "Config": [], "HostConfig": "host", "Image": None},
        {"Config": {"Image": 7, "Labels": ["a=b"]}, "HostConfig": {"Privileged": "true", "NetworkMode": 1}},
        {"Config": {"Image": "Not A Reference!", "Labels": {"a": 1, "b": None, "": "empty key", "ok": "v"}}},
        {"Config": {"Labels": {"k": {"nested": "dict"}}}, "HostConfig": {"PidMode": ["host"]}},
    ],
)
def test_wrong_types_give_empty_fields(doc: dict) -> None:
    meta = _meta(doc)
    assert isinstance(meta.name, str) and isinstance(meta.image_repository, str)  # type: ignore[attr-defined]
    assert meta.privileged is None or isinstance(meta.privileged, bool)  # type: ignore[attr-defined]
    orjson.dumps(dataclasses.asdict(meta))  # type: ignore[call-overload]


def test_wrong_types_in_detail() -> None:
    meta = _meta(
        {
            "Config": {"Image": "Not A Reference!", "Labels": {"a": 1, "ok": "v"}},
            "HostConfig": {"Privileged": "yes"},
        }
    )
    assert meta.image == "Not A Reference!" and meta.image_repository == "" and meta.image_tag == ""  # type: ignore[attr-defined]
    assert meta.labels == (("ok", "v"),) and meta.labels_truncated  # type: ignore[attr-defined]
    assert meta.privileged is None and meta.host_network is None  # type: ignore[attr-defined]


def test_control_characters_and_lone_surrogates_stay_json_safe(daemon: FakeDockerAPI) -> None:
    # JSON escapes carry what no UTF-8 encoder writes ("\ud800"); control characters stay (JSON escapes them).
    raw = (
        b'{"Id": "' + CID.encode() + b'", "Name": "/evil\\u0000\\n\\u001b[31mred\\ud800",'
        b' "Config": {"Image": "nginx", "Labels": {"k\\udfff": "v\\u2028\\r\\n", "x": "\\ud83d\\ude00"}}}'
    )
    daemon.routes[container_path()] = (200, raw)
    meta = DockerClient(daemon.path).inspect(CID, 2.0)
    assert meta is not None
    assert meta.name == "evil\x00\n\x1b[31mred\ufffd"
    assert dict(meta.labels) == {"k\ufffd": "v\u2028\r\n", "x": "\U0001f600"}
    line = orjson.dumps(dataclasses.asdict(meta))
    assert b"\n" not in line
    assert orjson.loads(line)["name"] == meta.name


def test_ten_thousand_labels_are_capped(daemon: FakeDockerAPI) -> None:
    labels = {f"label.{i:05d}": "x" * 20 for i in range(10_000)}
    labels["huge"] = "v" * 100_000
    daemon.routes[container_path()] = (200, docker_inspect(Config={"Image": "nginx", "Labels": labels}))
    meta = DockerClient(daemon.path).inspect(CID, 2.0)
    assert meta is not None
    assert len(meta.labels) == LABELS_MAX and meta.labels_truncated
    assert meta.labels[0] == ("label.00000", "x" * 20)  # sorted by key: the same ones every time
    assert meta.label("huge") is None


def test_huge_strings_are_cut(daemon: FakeDockerAPI) -> None:
    daemon.routes[container_path()] = (
        200,
        docker_inspect(Name="/" + "n" * 50_000, Config={"Image": "i" * 50_000}),
    )
    meta = DockerClient(daemon.path).inspect(CID, 2.0)
    assert meta is not None and len(meta.name) < 1100 and len(meta.image) <= 1024
    assert meta.image_repository == ""  # a cut reference is not parsed into a repository


def test_response_over_the_cap_is_refused(daemon: FakeDockerAPI) -> None:
    daemon.routes[container_path()] = (200, docker_inspect(Padding="x" * 300_000))
    with pytest.raises(RefusedAnswer, match="over"):
        DockerClient(daemon.path, max_bytes=200_000).inspect(CID, 2.0)


def test_endless_answer_is_refused_at_the_cap(daemon: FakeDockerAPI) -> None:
    def flood(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()
        chunk = b"[" * 65536
        try:
            while not daemon.stop.is_set():
                h.wfile.write(chunk)
        except OSError:
            pass

    daemon.routes[container_path()] = flood
    start = time.monotonic()
    with pytest.raises(RefusedAnswer, match="over"):
        DockerClient(daemon.path).inspect(CID, 5.0)
    assert time.monotonic() - start < 3.0


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2, 3]",
        b'"a string"',
        b"[" * 100_000 + b"]" * 100_000,  # nested past the parser's recursion limit
        b'{"Id": ' + b"9" * 5000 + b"}",  # an integer Python refuses to convert
        b"\xff\xfe\x00garbage",
    ],
)
def test_malformed_json_is_refused(daemon: FakeDockerAPI, body: bytes) -> None:
    daemon.routes[container_path()] = (200, body)
    with pytest.raises(RefusedAnswer):
        DockerClient(daemon.path).inspect(CID, 2.0)


def test_not_http_is_refused() -> None:
    with short_dir() as d:
        path = str(d / "garbage.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)

        def answer() -> None:
            conn, _ = server.accept()
            conn.recv(4096)
            conn.sendall(b"\x00\x01 this is no HTTP\r\n\r\n")
            conn.close()

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        with pytest.raises(RefusedAnswer, match="not an HTTP"):
            DockerClient(path).inspect(CID, 2.0)
        t.join(2)
        server.close()


# ---- slow, hung, absent ------------------------------------------------------------------------------


def test_hung_daemon_times_out(daemon: FakeDockerAPI) -> None:
    daemon.routes[container_path()] = lambda h: daemon.stop.wait(10)
    start = time.monotonic()
    with pytest.raises(LookupTimeout):
        DockerClient(daemon.path).inspect(CID, 0.3)
    assert 0.25 < time.monotonic() - start < 1.5


def test_slow_drip_is_bounded_by_one_deadline(daemon: FakeDockerAPI) -> None:
    """A byte every 50 ms never trips a per-read timeout; the whole exchange still has one deadline."""

    def drip(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        try:
            while not daemon.stop.wait(0.05):
                h.wfile.write(b" ")
                h.wfile.flush()
        except OSError:
            pass

    daemon.routes[container_path()] = drip
    start = time.monotonic()
    with pytest.raises(LookupTimeout):
        DockerClient(daemon.path).inspect(CID, 0.4)
    assert time.monotonic() - start < 1.5


def test_absent_socket() -> None:
    with short_dir() as d, pytest.raises(SocketMissing):
        DockerClient(str(d / "nothing.sock")).inspect(CID, 1.0)


def test_not_a_socket_is_unavailable() -> None:
    with short_dir() as d:
        path = d / "file"
        path.write_text("not a socket")
        with pytest.raises(RuntimeUnavailable) as info:
            DockerClient(str(path)).inspect(CID, 1.0)
        assert not isinstance(info.value, SocketMissing)


def test_reset_mid_answer_is_refused(daemon: FakeDockerAPI) -> None:
    def half(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"Id": ')
        h.wfile.flush()
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        h.connection.close()

    daemon.routes[container_path()] = half
    with pytest.raises(RefusedAnswer):
        DockerClient(daemon.path).inspect(CID, 2.0)


def test_image_facts_from_hostile_image_inspect() -> None:
    facts = ImageFacts(repo_tags=("bad tag!", "ok/app:v1"), repo_digests=("x@y", f"other/app@{DIGEST}"))
    doc = {"Config": {"Image": f"sha256:{IMAGE_HEX}"}, "Image": f"sha256:{IMAGE_HEX}"}
    meta = meta_from_inspect(doc, CID, "docker:/x", facts)
    assert (meta.image_repository, meta.image_tag) == ("ok/app", "v1")
    assert meta.image_digest == DIGEST  # the only digest the image has, though under another name


def test_mounts_are_read_and_hostile_entries_skipped(daemon: FakeDockerAPI) -> None:
    """Inspect's Mounts, in the runtime's order; entries of the wrong shape skipped, wrong types empty."""
    mounts: list[Any] = [
        {"Type": "bind", "Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock", "Mode": "",
         "RW": True, "Propagation": "rprivate"},
        "not a mount",
        {"Type": "volume", "Source": 7, "Destination": "/data\udc80", "Mode": "z", "RW": False},
    ]  # fmt: skip
    daemon.routes[container_path()] = (200, docker_inspect(Mounts=mounts))
    meta = DockerClient(daemon.path).inspect(CID, 2.0)
    assert meta is not None and meta.mounts == (
        Mount("/var/run/docker.sock", "/var/run/docker.sock", "", True, "rprivate"),
        Mount("", "/data\ufffd", "z", False, ""),
    )


def test_mounts_are_unknown_without_a_list_and_capped(daemon: FakeDockerAPI) -> None:
    daemon.routes[container_path()] = (200, docker_inspect(Mounts={"Source": "/"}))
    meta = DockerClient(daemon.path).inspect(CID, 2.0)
    assert meta is not None and meta.mounts is None  # not "no mounts": nothing is known
    many = [{"Source": f"/s{i}", "Destination": f"/d{i}", "RW": True} for i in range(MOUNTS_MAX + 100)]
    daemon.routes[container_path()] = (200, docker_inspect(Mounts=many))
    meta = DockerClient(daemon.path).inspect(CID, 2.0)
    assert meta is not None and meta.mounts is not None
    assert len(meta.mounts) == MOUNTS_MAX and meta.mounts_truncated and meta.mounts[0].source == "/s0"
