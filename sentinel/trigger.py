"""`sentinel test-alert`: a harmless action that a default rule alerts on, so a new user sees the whole
pipeline (probes → process table → rules → outputs) work end to end.

It copies ``/bin/true`` to ``/dev/shm/sentinel-test-alert-XXXXXXXX``, runs it once and deletes it: the
shipped rule *Program Run From Shared Memory* (a miner's or dropper's habit; nothing legitimate runs from
/dev/shm) fires on that exec. Nothing is read, changed or left behind. The running agent writes the alert;
this command only performs the action and says what to look for.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass

RULE = "Program Run From Shared Memory"
SHM = "/dev/shm"
SOURCE = "/bin/true"


@dataclass(frozen=True)
class Fired:
    """What was run, and the alert to expect (``problem`` set when the action could not be performed)."""

    executable: str
    pid: int = 0
    problem: str = ""
    rule: str = RULE


def fire(shm: str = SHM, source: str = SOURCE) -> Fired:
    """Copy, run once, delete. Never raises: a problem (no /dev/shm, mounted noexec) is in the result."""
    path = os.path.join(shm, f"sentinel-test-alert-{secrets.token_hex(4)}")
    if not os.path.isdir(shm):
        return Fired(path, problem=f"{shm} does not exist (the rule watches execs from /dev/shm)")
    try:
        shutil.copyfile(source, path)
        os.chmod(path, 0o700)
        proc = subprocess.Popen([path, "sentinel-test-alert"])
        proc.wait(10)
        return Fired(path, pid=proc.pid)
    except PermissionError as exc:
        return Fired(path, problem=f"cannot run {path}: {exc.strerror} ({shm} mounted noexec?)")
    except (OSError, subprocess.SubprocessError) as exc:
        return Fired(path, problem=f"cannot run {path}: {exc}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def describe(result: Fired) -> str:
    """The line printed for the user: what ran, and the alert a running agent writes for it."""
    if result.problem:
        return f"sentinel test-alert: {result.problem}"
    return (
        f"ran {result.executable} (pid {result.pid}) and deleted it: a running `sentinel run` writes a "
        f'"{result.rule}" alert for it (rule.name in ECS, rule in falco format) to its outputs within a '
        "second"
    )
