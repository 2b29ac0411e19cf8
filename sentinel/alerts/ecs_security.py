"""ECS documents for the security syscalls (:mod:`sentinel.syscalls`) and tamper evidence.

ECS has no field for most syscall arguments: they go under ``sentinel.event.arg`` (Falco's printed form,
keyed by Falco's parameter names) and ``sentinel.event.rawarg`` (the numbers), so a SIEM query and a Falco
rule name the same thing. What ECS does name is filled too: the category and type of the action, the file
a memfd or a module is, the process a signal or ptrace is aimed at (``sentinel.event.target``: a process
that is gone is named by pid only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sentinel.events import Event, EventType
from sentinel.syscalls import (
    SYSCALLS,
    TAMPER_KINDS,
    TAMPER_SIGNAL,
    arguments,
    bpf_program,
    namespaces,
    signal_name,
    tamper_fields,
)

if TYPE_CHECKING:
    from sentinel.process.table import Process

T = EventType
# ECS categorisation per family (allowed values of event.category / event.type).
_ECS: dict[str, tuple[list[str], list[str]]] = {
    "privilege": (["process"], ["change"]),
    "injection": (["process"], ["access"]),
    "kernel": (["driver"], ["change"]),
    "fileless": (["file"], ["creation"]),
    "mount": (["configuration"], ["change"]),
    "namespace": (["process"], ["change"]),
    "signal": (["process"], ["info"]),
}


def target_block(pid: int | None, target: Process | None) -> dict[str, Any] | None:
    if pid is None:
        return None
    if target is None:
        return {"pid": pid}
    return {"pid": pid, "executable": target.exe or None, "name": target.comm, "entity_id": target.entity_id}


def security_doc(
    doc: dict[str, Any],
    event: dict[str, Any],
    detail: dict[str, Any],
    ev: Event,
    target: Process | None,
    target_pid: int | None,
    fd_path: str | None,
) -> None:
    """Fill ``doc`` (already holding the common blocks) for a security syscall or a tamper record."""
    if ev.type is T.TAMPER:
        what, sig, tid = tamper_fields(ev)
        kind = TAMPER_KINDS.get(what, str(what))
        event.update(category=["process"], type=["access"], action="tamper", outcome="unknown")
        detail["tamper"] = {"kind": kind, "target_tid": tid}
        signal = what == TAMPER_SIGNAL
        detail["tamper"]["signal" if signal else "request"] = signal_name(sig) if signal else sig
        said = f": {signal_name(sig)}" if signal else ""
        doc["message"] = f"{kind} aimed at the agent (tid {tid}){said}"
        return
    spec = SYSCALLS[ev.type]
    category, types = _ECS[spec.family]
    name = spec.name
    args = arguments(ev)
    shown = {k: v[1] for k, v in args.items()}
    event.update(category=category, type=list(types), action=name)
    detail["family"] = spec.family
    detail["arg"] = shown
    detail["rawarg"] = {k: v[0] for k, v in args.items()}
    block = target_block(target_pid, target)
    if block is not None:
        detail["target"] = block
    if fd_path is not None:
        detail["fd_path"] = fd_path
    t = ev.type
    if t in (T.UNSHARE, T.SETNS):
        flags = ev.sys_args[0] if t is T.UNSHARE else ev.sys_args[1]
        detail["namespaces"] = namespaces(flags) if flags else []
    program = bpf_program(ev)
    if program is not None:
        detail["bpf"] = {"prog_type": program[0], "prog_name": program[1]}
    if t is T.MEMFD_CREATE:
        doc["file"] = {"name": f"memfd:{shown.get('name', '')}"}
    elif t is T.FINIT_MODULE and fd_path:
        doc["file"] = {"path": fd_path}
    words = " ".join(f"{k}={v}" for k, v in shown.items())
    target_text = ""
    if block is not None:
        target_text = f" -> {block.get('executable') or block.get('name') or ''}[{block['pid']}]"
    doc["message"] = f"{name} {words}{target_text}".rstrip()
    if ev.ret < 0:
        doc["message"] += f" failed: {doc.get('error', {}).get('code', ev.ret)}"
