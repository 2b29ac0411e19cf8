"""The ``containers`` section (runtime metadata: whether to ask, which sockets), its located errors, the
flags over it, drop-ins per key, the config check's warnings, and what `sentinel run` builds from it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sentinel import cli
from sentinel.agent import RESTART_KEYS, effective_settings
from sentinel.config import ConfigError, load_config, parse_config
from sentinel.config_check import check_config
from sentinel.detect import find_rules_dir

RULES = find_rules_dir()


def test_defaults_ask_the_usual_sockets() -> None:
    cfg = parse_config("", "c.yaml")
    assert (cfg.container_metadata, cfg.container_endpoints) == (True, None)


def test_the_section() -> None:
    cfg = parse_config(
        "containers:\n  metadata: true\n"
        "  endpoints: [podman:/run/podman/podman.sock, 'containerd:unix:///run/c.sock']\n",
        "/etc/sentinel/c.yaml",
    )
    assert cfg.container_endpoints == ["podman:/run/podman/podman.sock", "containerd:/run/c.sock"]
    assert cfg.location("containers.endpoints") == ("/etc/sentinel/c.yaml", 3, 3)
    off = parse_config("containers: {metadata: false}\n", "c.yaml")
    assert off.container_metadata is False and off.warnings == []
    single = parse_config("containers: {endpoints: docker:/var/run/docker.sock}\n", "c.yaml")
    assert single.container_endpoints == ["docker:/var/run/docker.sock"]


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("containers:\n  endpoints: [docker:/a.sock, rkt:/b.sock]\n", 2, 31, "'rkt:/b.sock': expected"),
        ("containers:\n  endpoints: [docker:relative.sock]\n", 2, 15, "the socket path must be absolute"),
        ("containers:\n  endpoints: []\n", 2, 14, "must name at least one socket"),
        ("containers:\n  endpoints: [3]\n", 2, 15, "must be a non-empty string"),
        ("containers:\n  metadata: sometimes\n", 2, 13, "metadata must be true or false"),
        ("containers:\n  socket: /x\n", 2, 3, "unknown key 'socket' in containers; known keys: metadata"),
        ("containers: on\n", 1, 13, "containers must be a mapping"),
    ],
)
def test_errors_are_located(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/sentinel/c.yaml")
    err = info.value
    assert (err.line, err.column) == (line, column), str(err)
    assert words in err.message


def test_endpoints_without_metadata_are_a_warning() -> None:
    cfg = parse_config("containers:\n  metadata: false\n  endpoints: [docker:/a.sock]\n", "c.yaml")
    (warning,) = cfg.warnings
    assert (warning.line, warning.column) == (3, 3) and "no effect" in warning.message


def test_a_drop_in_replaces_only_the_keys_it_gives(tmp_path: Path) -> None:
    main = tmp_path / "sentinel.yaml"
    main.write_text("containers:\n  endpoints: [docker:/a.sock]\n")
    (tmp_path / "sentinel.d").mkdir()
    (tmp_path / "sentinel.d" / "10-off.yaml").write_text("containers: {metadata: false}\n")
    cfg = load_config(str(main))
    assert (cfg.container_metadata, cfg.container_endpoints) == (False, ["docker:/a.sock"])


def test_flags_override_the_section(tmp_path: Path) -> None:
    config = tmp_path / "sentinel.yaml"
    config.write_text(f"rules: [{RULES}]\ncontainers: {{endpoints: [docker:/a.sock]}}\n")
    parse = cli.build_parser().parse_args
    cfg = effective_settings(parse(["run", "--config", str(config)]), live=True)
    assert (cfg.container_metadata, cfg.container_endpoints) == (True, ["docker:/a.sock"])
    flags = ["--container-endpoint", "podman:/p.sock", "--no-container-metadata"]
    cfg = effective_settings(parse(["run", "--config", str(config), *flags]), live=True)
    assert (cfg.container_metadata, cfg.container_endpoints) == (False, ["podman:/p.sock"])
    assert {"container_metadata", "container_endpoints"} <= set(RESTART_KEYS)  # the service opens at start


def test_bad_endpoint_flags_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["events", "--container-endpoint", "docker"])
    assert "expected <kind>:<socket path>" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["record", "-o", "x", "--container-endpoint", "podman:unix:///p.sock"])
    assert args.container_endpoint == ["podman:/p.sock"]


def test_the_check_warns_of_sockets_this_host_lacks(tmp_path: Path) -> None:
    there = tmp_path / "d.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(there))
    try:
        path = tmp_path / "sentinel.yaml"
        path.write_text(
            f"rules: [{RULES}]\nstate_dir: {tmp_path / 'state'}\nmodel: 'off'\n"
            f"containers:\n  endpoints: [docker:{there}, podman:{tmp_path}/absent.sock]\n"
        )
        report = check_config(str(path))
    finally:
        server.close()
    assert report.ok
    (warning,) = [w for w in report.warnings if w.code == "containers"]
    assert "absent.sock: no socket there" in warning.message and (warning.line, warning.column) == (5, 3)


class _FakeService:
    def __init__(self, endpoints: list[str] | None) -> None:
        self.endpoints_given = endpoints

    def close(self) -> None:
        pass


def test_live_setup_makes_one_service_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """`sentinel run` passes its configuration; `events` and `record` their flags; off makes none."""
    import sentinel.containers.metadata_service as ms

    made: list[_FakeService] = []
    def service(endpoints: list[str] | None) -> _FakeService:
        made.append(_FakeService(endpoints))
        return made[-1]

    monkeypatch.setattr(ms, "MetadataService", service)
    monkeypatch.setattr("sentinel.sensor.loader.Sensor", lambda cfg: object())
    parse = cli.build_parser().parse_args
    _, table, _ = cli._live_setup(parse(["events"]), metadata=(True, ["docker:/a.sock"]))
    assert table.containers.metadata.service is made[-1] and made[-1].endpoints_given == ["docker:/a.sock"]
    assert cli._poll_metadata(table) == table.containers.metadata.poll
    table.containers.close()
    _, table, _ = cli._live_setup(parse(["events", "--container-endpoint", "podman:/p.sock"]))
    assert made[-1].endpoints_given == ["podman:/p.sock"]
    table.containers.close()
    args = parse(["record", "-o", "x", "--no-container-metadata"])
    _, table, _ = cli._live_setup(args, on_container_meta=print)
    assert table.containers.metadata is None and len(made) == 2
    assert cli._poll_metadata(table) is None
    table.containers.close()
