"""Record real kernel events, replay them, and compare with what the live agent printed at the same time."""

from __future__ import annotations

import subprocess
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import REPO, Agent, get, sentinel_cmd

pytestmark = pytest.mark.kernel


def start_recorder(path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], list[dict[str, Any]]]:
    proc = subprocess.Popen(
        sentinel_cmd("record", "--output", str(path), *extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    diags: list[dict[str, Any]] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            rec = orjson.loads(line)
            diags.append(rec)
            if rec.get("event") == "sentinel.ready":
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc.reader = reader  # type: ignore[attr-defined]  # joined by callers that read the last lines
    if not ready.wait(60):
        proc.kill()
        pytest.fail(f"sentinel record did not become ready: {diags}")
    return proc, diags


def wall_ns(stamp: str) -> int:
    secs, frac = stamp.rstrip("Z").split(".")
    return int(datetime.fromisoformat(secs).replace(tzinfo=UTC).timestamp()) * 10**9 + int(frac.ljust(9, "0"))


def without_starts(block: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in block.items() if k != "start"}
    if isinstance(out.get("parent"), dict):
        out["parent"] = without_starts(out["parent"])
    return out


def stable(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without what differs per rendering run (document id, rendering time)."""
    event = {k: v for k, v in doc["event"].items() if k not in ("id", "created")}
    return {**doc, "event": event}


def replay(path: Path) -> tuple[int, list[dict[str, Any]], str]:
    res = subprocess.run(
        sentinel_cmd("replay", str(path), "--events", "--types", "all"), capture_output=True, cwd=REPO
    )
    docs = [orjson.loads(line) for line in res.stdout.splitlines()]
    return res.returncode, docs, res.stderr.decode()


@pytest.fixture(scope="module")
def recording(agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """A capture of a small scripted workload, recorded while the session's live agent also watched it."""
    tmp = tmp_path_factory.mktemp("capture")
    path = tmp / "run.capture"
    mark = "rec" + uuid.uuid4().hex[:10]
    proc, diags = start_recorder(path)
    work = tmp / "work"
    work.mkdir()
    subprocess.run(
        ["/bin/sh", "-c", f"cd {work} && /bin/sh -c '/bin/echo {mark} \"a b\" > out.txt; true'; true"],
        check=True,
    )
    agent.wait_for(lambda d: mark in (get(d, "process.args") or []), what="marker in the live stream")
    proc.terminate()
    assert proc.wait(30) == 0
    proc.reader.join(10)  # type: ignore[attr-defined]  # the stop record is the last line
    assert any(d.get("event") == "sentinel.stopped" for d in diags)
    return path, mark, work


def test_replay_gives_what_the_live_agent_printed(agent: Agent, recording: tuple[Path, str, Path]) -> None:
    path, mark, work = recording
    rc, docs, err = replay(path)
    assert rc == 0, err
    replayed = [
        d for d in docs if mark in (get(d, "process.args") or []) and get(d, "event.action") == "exec"
    ]
    live = [
        d
        for d in agent.snapshot()
        if mark in (get(d, "process.args") or []) and get(d, "event.action") == "exec"
    ]
    assert len(replayed) == 1 and len(live) == 1
    r, lv = replayed[0], live[0]
    # Each agent measures the boot epoch (wall clock minus CLOCK_BOOTTIME) itself: microseconds apart.
    assert abs(wall_ns(r["@timestamp"]) - wall_ns(lv["@timestamp"])) < 1_000_000
    assert without_starts(r["process"]) == without_starts(lv["process"])
    assert r["sentinel"]["ancestors"] == lv["sentinel"]["ancestors"]
    assert r["host"] == lv["host"]
    assert get(r, "process.working_directory") == str(work)
    assert get(r, "process.args") == ["/bin/echo", mark, "a b"]
    assert len(get(r, "sentinel.ancestors")) >= 3
    # The redirect opened out.txt relative to the shell's cwd: resolved the same way in replay.
    assert any(get(d, "file.path") == str(work / "out.txt") for d in docs)


def test_truncated_capture_keeps_what_was_readable(recording: tuple[Path, str, Path], tmp_path: Path) -> None:
    path, _, _ = recording
    data = path.read_bytes()
    cut = tmp_path / "cut.capture"
    cut.write_bytes(data[: len(data) - 3])
    rc, docs, err = replay(cut)
    assert rc == 1
    assert "byte" in err and str(cut) in err and "Traceback" not in err
    full_rc, full_docs, _ = replay(path)
    assert full_rc == 0
    assert len(docs) >= len(full_docs) - 1
    assert [stable(d) for d in docs] == [stable(d) for d in full_docs[: len(docs)]]


def test_append_adds_a_segment(tmp_path: Path) -> None:
    path = tmp_path / "two.capture"
    for extra in ((), ("--append",)):
        proc, _ = start_recorder(path, *extra)
        subprocess.run(["/bin/true", "seg" + uuid.uuid4().hex[:6]], check=True)
        proc.terminate()
        assert proc.wait(30) == 0
    res = subprocess.run([*sentinel_cmd("replay", str(path), "--events")], capture_output=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    from sentinel.capture import describe

    assert len(describe(path).headers) == 2
