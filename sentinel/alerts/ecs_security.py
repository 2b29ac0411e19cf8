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
    BPF_COMMANDS,
    SYSCALLS,
    TAMPER_BPF,
    TAMPER_FD,
    TAMPER_KINDS,
    TAMPER_PTRACE,
    TAMPER_SIGNAL,
    arguments,
    bpf_program,
    caller_userns,
    namespaces,
    setns_target,
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


def argument_blocks(
    detail: dict[str, Any], ev: Event, resolved: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``sentinel.event.family``, ``.arg`` (as Falco prints them; ``resolved`` paths in place of their
    spelling) and ``.rawarg`` of a syscall event; returns (raw, shown)."""
    args = arguments(ev)
    raw = {k: v[0] for k, v in args.items()}
    shown = {k: v[1] for k, v in args.items()}
    if resolved:
        shown.update((k, resolved[k]) for k in shown.keys() & resolved.keys())
    detail["family"] = SYSCALLS[ev.type].family
    detail["arg"] = shown
    detail["rawarg"] = raw
    return raw, shown


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
        block: dict[str, Any] = {"kind": kind}
        said = ""
        if what == TAMPER_BPF:
            command = BPF_COMMANDS[sig] if 0 <= sig < len(BPF_COMMANDS) else str(sig)
            block.update(command=command, object_id=tid)
            doc["message"] = f"{kind}: the agent's BPF object {tid} opened ({command})"
        else:
            block["target_tid"] = tid
            if what == TAMPER_SIGNAL:
                block["signal"] = said = signal_name(sig)
            elif what == TAMPER_PTRACE:
                block["request"] = sig
            elif what == TAMPER_FD:
                block["fd"] = sig
                said = f"fd {sig}"
            doc["message"] = f"{kind} aimed at the agent (tid {tid}){': ' + said if said else ''}"
        detail["tamper"] = block
        return
    spec = SYSCALLS[ev.type]
    category, types = _ECS[spec.family]
    name = spec.name
    _raw, shown = argument_blocks(detail, ev)
    event.update(category=category, type=list(types), action=name)
    block = target_block(target_pid, target)
    if block is not None:
        detail["target"] = block
    if fd_path is not None:
        detail["fd_path"] = fd_path
    t = ev.type
    if t in (T.UNSHARE, T.SETNS):
        flags = ev.sys_args[0] if t is T.UNSHARE else ev.sys_args[1]
        detail["namespaces"] = namespaces(flags) if flags else []
    joined = setns_target(ev)
    if joined is not None:
        setns: dict[str, Any] = {"init_ns": list(joined.init)}
        if joined.ns_inode:
            setns["ns_inode"] = joined.ns_inode
        if joined.pid:
            setns["pid"] = joined.pid
        detail["setns"] = setns
    userns = caller_userns(ev)
    if userns is not None:
        detail["userns"] = {"level": userns.level, "inode": userns.inode}
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
