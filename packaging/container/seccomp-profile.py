#!/usr/bin/env python3
"""Write the seccomp profile the sentinel container runs under: the container runtime's own default profile
with bpf(2) and perf_event_open(2) allowed without CAP_SYS_ADMIN.

The default profile (containers-common's /usr/share/containers/seccomp.json, like Docker's) allows those two
syscalls only to a container holding CAP_SYS_ADMIN and returns EPERM otherwise, so an agent holding just
CAP_BPF and CAP_PERFMON fails to create its maps ("could not open bpf map ...: Operation not permitted").
The kernel still checks CAP_BPF/CAP_PERFMON on every call; only the filter's shortcut to CAP_SYS_ADMIN goes.
Derived from the host's profile at deploy time rather than shipped: it follows the runtime's updates.

    seccomp-profile.py [DEFAULT] > sentinel-seccomp.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

DEFAULT = "/usr/share/containers/seccomp.json"
SYSCALLS = ("bpf", "perf_event_open")


def profile(default: dict[str, Any]) -> dict[str, Any]:
    groups = []
    for group in default["syscalls"]:
        names = [n for n in group["names"] if n not in SYSCALLS]
        if names:
            groups.append({**group, "names": names})
    groups.append({
        "names": list(SYSCALLS),
        "action": "SCMP_ACT_ALLOW",
        "comment": "sentinel: eBPF with CAP_BPF and CAP_PERFMON (the kernel checks them), no CAP_SYS_ADMIN",
    })
    return {**default, "syscalls": groups}


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else DEFAULT
    try:
        with open(path) as f:
            default = json.load(f)
    except (OSError, ValueError) as exc:
        print(f"seccomp-profile.py: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    json.dump(profile(default), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
