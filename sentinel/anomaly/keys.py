"""What the host profiles count: the program, and the normalised directory, address range and access class.

Profiles must see a program's *habits*, not the per-run names its habits produce: ``/proc/4711`` and
``/proc/4712`` are one habit, as are ``/tmp/tmp.k3Jd9aZ0/`` and ``/tmp/tmp.Q8sL2mPx/``, or every run would
look new. Digit runs become ``#``; hex identifiers (hashes, UUIDs, machine ids) and temporary names
(``tmp.XXXXXXXXXX``, ``tmpabc123_x``) become ``*``; a directory is kept to its first ``DIR_DEPTH``
components (``/work/repo/.git/objects/3f`` is the habit ``/work/repo/.git/objects``: a program that reads a
tree reads its subdirectories). Only the model's keys are normalised: rules and alerts always see the exact
path. An attacker can hide a name among those shapes (``/tmp/tmp.payload1``), not a directory: the first
components stay as they are.

A *program* is its executable, and for an interpreter also what it interprets (``python3 -m pytest``,
``python3 /srv/app/job.py``, ``java -jar app.jar``, ``bash /usr/local/bin/backup.sh``, ``sh -c``): every
Python program is ``/usr/bin/python3.11``, and a profile of "what python3.11 does" would hold the whole host.
A shell with no script is the interactive shell: an admin's session, whose children are new all the time,
is then not one profile with the shells that run the host's scripts, whose children never change.
"""

from __future__ import annotations

import functools
import re

from sentinel.events import AF_INET, AF_INET6, AF_UNIX

_DIGITS = re.compile(r"[0-9]+")
_HEXISH = re.compile(r"(?=[^/]*[0-9])(?=[^/]*[a-fA-F])[0-9a-fA-F][0-9a-fA-F-]{7,}")
_TEMP = re.compile(r"tmp[._-]?[A-Za-z0-9_]{6,}")
WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000  # O_WRONLY | O_RDWR | O_CREAT | O_TRUNC
DIR_DEPTH = 4
_INTERPRETER = re.compile(
    r"(?:python|pypy|perl|ruby|php|lua|node|nodejs|java|Rscript|tclsh|wish)[0-9.]*|(?:ba|da|z|k|mk|c|tc|fi)?sh"
)
_SHELL = re.compile(r"(?:ba|da|z|k|mk|c|tc|fi)?sh")
_SHELL_VALUED = frozenset({"-o", "+o", "-O", "+O", "--rcfile", "--init-file"})
# Options that take the next argument as their value, so it is not the script (python -X opt, -W arg…).
_VALUED = frozenset({"-X", "-W", "-Q", "-I", "-e", "-E", "-r", "-cp", "-classpath", "--class-path",
                     "--require", "-d", "-M"})  # fmt: skip


@functools.lru_cache(maxsize=65_536)
def dir_class(directory: str) -> str:
    """The directory as a habit: its first ``DIR_DEPTH`` components, volatile ones (ids, pids, temporary
    names) replaced."""
    parts = directory.split("/")
    if directory.startswith("/") and len(parts) > DIR_DEPTH + 1:
        parts = parts[: DIR_DEPTH + 1]
    elif not any(c.isdigit() for c in directory) and "tmp" not in directory:
        return directory
    for i, part in enumerate(parts):
        if not part:
            continue
        if _HEXISH.fullmatch(part) or (part.startswith("tmp") and _TEMP.fullmatch(part)):
            parts[i] = "*"
        elif any(c.isdigit() for c in part):
            parts[i] = _DIGITS.sub("#", part)
    return "/".join(parts)


def program(exe: str, args: list[str] | None) -> str:
    """The program a process runs: the executable, plus the script or module for an interpreter."""
    base = exe.rsplit("/", 1)[-1]
    if not args or not _INTERPRETER.fullmatch(base):
        return exe
    it = iter(args[1:])
    for a in it:
        if a in ("-m", "-jar") or a.startswith("--module"):
            return f"{exe} {a} {next(it, '')}"
        shell = _SHELL.fullmatch(base) is not None
        if a == "-c" or (a == "-e" and not shell and not base.startswith("java")):  # inline code
            return f"{exe} {a}"
        if shell and len(a) > 1 and a[0] == "-" and "c" in a[1:] and a[1] != "-":
            return f"{exe} -c"  # sh -ec '…', bash -lc '…': inline code too
        if a in (_SHELL_VALUED if shell else _VALUED):
            next(it, None)
            continue
        if a.startswith("-") or not a:
            continue
        i = a.rfind("/")
        return f"{exe} {dir_class(a[:i]) + a[i:] if i > 0 else a}"
    return exe


def is_write_open(flags: int) -> bool:
    """An open that can change the file: write access, create or truncate."""
    return bool(flags & WRITE_FLAGS)


def dest_range(family: int, address: str) -> str:
    """The address range a connection went to: IPv4 /24, IPv6 /64, a unix socket's directory class."""
    if not address:
        return ""
    if family == AF_INET:
        return address.rsplit(".", 1)[0] + ".0/24"
    if family == AF_INET6:
        head = address.split("::", 1)[0] if "::" in address else address
        groups = [g for g in head.split(":") if g][:4]
        return ":".join(groups + ["0"] * (4 - len(groups))) + "::/64"
    if family == AF_UNIX:
        if address.startswith("@"):
            return "unix:@" + _DIGITS.sub("#", address[1:])
        i = address.rfind("/")
        return "unix:" + (dir_class(address[:i]) + address[i:] if i > 0 else address)
    return ""
