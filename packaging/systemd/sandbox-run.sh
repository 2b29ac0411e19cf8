#!/usr/bin/env bash
# Run `sentinel run` the way sentinel.service would, on a host whose PID 1 is not systemd: a private mount
# namespace with the unit's filesystem sandbox emulated (ProtectSystem=strict, ProtectHome=read-only,
# PrivateTmp, ProtectKernelTunables, ProtectControlGroups; writable only the state and logs directories and
# ReadWritePaths=/sys/fs/bpf), then the unit's CapabilityBoundingSet as bounding, inheritable and ambient
# sets, SecureBits=noroot-locked and NoNewPrivileges. Not emulated: SystemCallFilter, PrivateDevices,
# RestrictAddressFamilies and the other seccomp/namespace settings.
#
#   bash packaging/systemd/sandbox-run.sh STATE_DIR LOGS_DIR [sentinel run arguments...]
#
# STATE_DIR and LOGS_DIR must exist (StateDirectory/LogsDirectory). Environment: SENTINEL_PYTHON (default the
# checkout's .venv python), SENTINEL_TAMPER_PIN, NOTIFY_SOCKET and WATCHDOG_USEC pass through.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
UNIT="$REPO/packaging/systemd/sentinel.service"
PY=${SENTINEL_PYTHON:-$REPO/.venv/bin/python}
[[ $# -ge 2 ]] || { echo "usage: $0 STATE_DIR LOGS_DIR [sentinel run args...]" >&2; exit 2; }
STATE=$(realpath "$1") LOGS=$(realpath "$2"); shift 2
CAPS=$(sed -n 's/^CapabilityBoundingSet=//p' "$UNIT" | tr ' ' '\n' | sed '/^$/d; s/^CAP_//' | tr 'A-Z' 'a-z' \
       | sed 's/^/+/' | paste -sd, -)
[[ -n $CAPS ]] || { echo "$UNIT: no CapabilityBoundingSet" >&2; exit 2; }

if [[ ${_SENTINEL_SANDBOXED:-} != 1 ]]; then
    exec env _SENTINEL_SANDBOXED=1 unshare --mount --propagation private "$0" "$STATE" "$LOGS" "$@"
fi
keep=("$STATE" "$LOGS" /sys/fs/bpf)
for d in "${keep[@]}"; do mount --bind "$d" "$d"; done
# PrivateTmp (a NOTIFY_SOCKET must live outside /tmp, as systemd's /run/systemd/notify does). A checkout under
# /tmp (a CI's fresh clone; the service itself runs from /usr or /opt) stays visible at its path: held by an
# open descriptor while the new /tmp is mounted, then bound back (read-only below, as ProtectSystem has it).
held=""
case "$REPO/" in /tmp/*|/var/tmp/*) held=$REPO; exec 9<"$held" ;; esac
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
if [[ -n $held ]]; then
    mkdir -p "$held" && mount --no-canonicalize --bind /proc/self/fd/9 "$held"  # (the fd, not its old path)
    exec 9<&-
fi
# ProtectSystem=strict, ProtectHome=read-only, ProtectControlGroups, ProtectKernelTunables: every mount
# read-only but /dev and /proc (API trees) and what is kept writable; /proc/sys read-only too.
while read -r mp; do
    case "$mp" in
        /dev|/dev/*|/proc|/proc/*|/tmp|/var/tmp|"$STATE"|"$LOGS"|/sys/fs/bpf) continue ;;
    esac
    mount -o remount,bind,ro "$mp" 2>/dev/null || echo "sandbox-run: could not make $mp read-only" >&2
done < <(awk '{print $5}' /proc/self/mountinfo | sort -u)
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
cd /
exec setpriv --no-new-privs --securebits=+noroot,+noroot_locked \
    --bounding-set="-all,$CAPS" --inh-caps="-all,$CAPS" --ambient-caps="-all,$CAPS" \
    env -u _SENTINEL_SANDBOXED PYTHONDONTWRITEBYTECODE=1 "$PY" -m sentinel.cli run \
    --state-dir "$STATE" "$@"
