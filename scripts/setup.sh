#!/usr/bin/env bash
# Prepare this host to build, test and run sentinel: distro packages (bcc comes only from Debian), kernel
# headers that bcc can compile against, tracefs, and the project venv. Idempotent; repeated runs skip work
# that is already done, so every script can call it first.
#
# Environment:
#   SENTINEL_APT_UPDATE=1   force `apt-get update` even when every package is already installed
set -euo pipefail

log() { printf '[setup] %s\n' "$*"; }
warn() { printf '[setup] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[setup] ERROR: %s\n' "$*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root: it installs packages, links kernel headers and mounts tracefs"

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO_ROOT/.venv"
STATE_DIR=/var/lib/sentinel
SYSTEM_PYTHON=/usr/bin/python3
KREL=$(uname -r)
MODDIR="/lib/modules/$KREL"
START=$SECONDS

export DEBIAN_FRONTEND=noninteractive
# curl, git, logrotate and openssh-client are not needed by the agent: the end-to-end tests drive them as
# real workloads (ssh: the client Falco's "Disallowed SSH Connection Non Standard Port" watches).
# podman, runc, debootstrap and catatonit run the container tests' real containers: runc because Debian's
# default runtime (crun) is only recommended; debootstrap builds their image (no registry is reachable);
# catatonit is the pause process podman builds a pod's infra image from. dpkg-dev builds the Debian package
# (packaging/build-deb.sh, tests/packaging).
PACKAGES=(python3-bpfcc bpfcc-tools libbpfcc python3-venv python3-pip bpftool iproute2 gcc libc6-dev
    ca-certificates curl git logrotate openssh-client podman runc debootstrap catatonit dpkg-dev)
# systemd-analyze checks packaging/systemd/sentinel.service (verify, security score) in the unit tests.
PACKAGES+=(systemd)

# --- distro packages ----------------------------------------------------------------------------------------

APT_UPDATED=0
apt_update_once() {
    [[ $APT_UPDATED -eq 1 ]] && return 0
    log "apt-get update"
    apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null || {
        warn "apt-get update failed"
        return 1
    }
    APT_UPDATED=1
}

is_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

apt_install() {
    apt_update_once || return 1
    log "apt-get install $*"
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" >/dev/null || {
        warn "apt-get install $* failed"
        return 1
    }
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
if [[ ${SENTINEL_APT_UPDATE:-0} == 1 ]]; then
    apt_update_once || die "apt-get update failed (network, or another apt holding the lock?)"
fi
if ((${#missing[@]})); then
    apt_install "${missing[@]}" || die "could not install: ${missing[*]}"
else
    log "distro packages present"
fi

# --- kernel headers -----------------------------------------------------------------------------------------
# bcc compiles probes against /lib/modules/$(uname -r)/build and, when it exists, .../source. Debian splits its
# headers into linux-headers-<ver>-<arch> (generated files, config) and linux-headers-<ver>-common (the
# sources), so both links are needed; BCC_KERNEL_SOURCE cannot express that split.

# Version string of a header tree, from its generated utsrelease.h, else from the directory name.
tree_version() {
    local tree=$1 uts="$1/include/generated/utsrelease.h"
    if [[ -r $uts ]]; then
        sed -n 's/^#define UTS_RELEASE "\(.*\)"$/\1/p' "$uts" | head -n1
    else
        basename "$tree" | sed 's/^linux-headers-//'
    fi
}

# A build tree bcc can use: a Makefile and include/, plus the kernel's own headers either in it or in source.
build_tree_valid() {
    [[ -f $MODDIR/build/Makefile && -d $MODDIR/build/include ]] || return 1
    [[ -d $MODDIR/build/include/linux || -d $MODDIR/source/include/linux ]]
}

# Replace a link (or create it); never remove a real directory someone put there.
link_into_moddir() {
    local name=$1 target=$2
    if [[ -e $MODDIR/$name && ! -L $MODDIR/$name ]]; then
        warn "$MODDIR/$name is a real directory, not replacing it"
        return 1
    fi
    ln -sfn "$target" "$MODDIR/$name"
    log "linked $MODDIR/$name -> $target"
}

# The -common sibling of a Debian -<arch> tree, when there is one.
common_sibling() {
    # /usr/src/linux-headers-6.1.0-56-amd64 -> /usr/src/linux-headers-6.1.0-56-common
    local common="${1%-"$2"}-common"
    [[ $common != "$1-common" && -d $common ]] && printf '%s\n' "$common"
}

# Debian arm64 and amd64 trees are named after dpkg's architecture; other arches fall back to it as well.
ARCH=$(dpkg --print-architecture)

setup_substitute_headers() {
    log "no linux-headers-$KREL package exists for this kernel; installing linux-headers-$ARCH instead"
    is_installed "linux-headers-$ARCH" || apt_install "linux-headers-$ARCH" || return 1
    local tree common
    tree=$(find /usr/src -maxdepth 1 -type d -name "linux-headers-*-$ARCH" | sort -V | tail -n1)
    [[ -n $tree ]] || {
        warn "linux-headers-$ARCH installed but no /usr/src/linux-headers-*-$ARCH tree found"
        return 1
    }
    mkdir -p "$MODDIR"
    link_into_moddir build "$tree" || return 1
    if common=$(common_sibling "$tree" "$ARCH"); then
        link_into_moddir source "$common" || return 1
    else
        link_into_moddir source "$tree" || return 1
    fi
}

if ! build_tree_valid && [[ -L $MODDIR/build && -f $MODDIR/build/Makefile && ! -e $MODDIR/source ]]; then
    # A build link without its source half: add the -common sibling.
    build_target=$(readlink -f "$MODDIR/build")
    if common=$(common_sibling "$build_target" "$ARCH"); then
        link_into_moddir source "$common" || true
    fi
fi

if build_tree_valid; then
    log "kernel headers present at $MODDIR/build -> $(readlink -f "$MODDIR/build")"
elif apt_update_once && apt-cache show "linux-headers-$KREL" >/dev/null 2>&1; then
    apt_install "linux-headers-$KREL" || warn "installing linux-headers-$KREL failed"
else
    setup_substitute_headers || warn "could not set up substitute kernel headers"
fi

if build_tree_valid; then
    headers_version=$(tree_version "$(readlink -f "$MODDIR/build")")
    if [[ $headers_version == "$KREL" ]]; then
        headers_mode=matching
    else
        headers_mode=substitute
        log "NOTE: kernel headers $headers_version do not match the running kernel $KREL."
        log "NOTE: bcc compiles against them; sentinel runs in tracepoint-only mode (no struct layouts),"
        log "NOTE: reading only tracepoint fields and BPF helpers, so its events stay correct."
    fi
else
    headers_mode=missing
    warn "no usable kernel headers: bcc cannot compile probes (unit tests still run)."
    warn "install linux-headers-$KREL, or linux-headers-$ARCH and rerun this script."
fi
mkdir -p "$STATE_DIR"
printf '%s\n' "$headers_mode" >"$STATE_DIR/headers-mode"
log "headers mode: $headers_mode (recorded in $STATE_DIR/headers-mode)"

# --- tracefs ------------------------------------------------------------------------------------------------

if grep -qs '^[^ ]* /sys/kernel/tracing tracefs ' /proc/mounts; then
    log "tracefs mounted at /sys/kernel/tracing"
else
    log "mounting tracefs at /sys/kernel/tracing"
    mount -t tracefs tracefs /sys/kernel/tracing || die "cannot mount tracefs at /sys/kernel/tracing"
fi

# --- podman -------------------------------------------------------------------------------------------------
# Two settings podman needs on these hosts, in a drop-in of our own (podman reads containers.conf.d since 4.x;
# the administrator's containers.conf and other drop-ins are left alone): runc, the runtime installed above;
# and rlimits no higher than the host's, because root here lacks CAP_SYS_RESOURCE and cannot raise
# them (podman's defaults, nofile 1048576, make every container fail to start).

PODMAN_DROPIN=/etc/containers/containers.conf.d/50-sentinel-tests.conf
PODMAN_CONF='# Written by sentinel scripts/setup.sh (the container tests); rewritten when it differs.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"'

if [[ -f $PODMAN_DROPIN && $(<"$PODMAN_DROPIN") == "$PODMAN_CONF" ]]; then
    log "podman settings present in $PODMAN_DROPIN"
else
    log "writing podman settings to $PODMAN_DROPIN"
    mkdir -p "$(dirname "$PODMAN_DROPIN")" || die "cannot create $(dirname "$PODMAN_DROPIN")"
    printf '%s\n' "$PODMAN_CONF" >"$PODMAN_DROPIN.tmp" && mv "$PODMAN_DROPIN.tmp" "$PODMAN_DROPIN" ||
        die "cannot write $PODMAN_DROPIN"
fi
PODMAN_INFO='{{.Version.Version}}, runtime {{.Host.OCIRuntime.Name}},'
PODMAN_INFO+=' cgroups {{.Host.CgroupManager}} {{.Host.CgroupsVersion}}'
podman_info=$(podman info --format "$PODMAN_INFO" 2>&1) || die "podman does not work: $podman_info"
log "podman $podman_info"

# --- venv ---------------------------------------------------------------------------------------------------
# bcc is importable only from the distro interpreter, so the venv is built from it and sees its site-packages.

venv_ok() {
    [[ -x $VENV/bin/python && -f $VENV/pyvenv.cfg ]] || return 1
    grep -qE '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" || return 1
    grep -qE '^home *= */usr/bin$' "$VENV/pyvenv.cfg" || return 1
    "$VENV/bin/python" -c 'import sys' 2>/dev/null
}

if ! venv_ok; then
    if [[ -e $VENV ]]; then
        log "venv at $VENV is broken or not built from $SYSTEM_PYTHON with system site packages: recreating"
        rm -rf "$VENV"
    fi
    log "creating venv $VENV"
    "$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV"
    log "upgrading pip"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi

STAMP="$VENV/.sentinel-install.sha256"
want_stamp=$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)
have_stamp=$(cat "$STAMP" 2>/dev/null || true)
# The install also points the venv at this checkout; a moved checkout needs a reinstall even if unchanged.
installed_at=$("$VENV/bin/python" -c 'import sentinel, os; print(os.path.dirname(list(sentinel.__path__)[0]))' \
    2>/dev/null || true)
if [[ $want_stamp == "$have_stamp" && $installed_at == "$REPO_ROOT" ]]; then
    log "python packages up to date (pyproject.toml unchanged)"
else
    log "pip install -e '.[test,train,sigma,cri]'"
    (cd "$REPO_ROOT" && "$VENV/bin/python" -m pip install -q -e '.[test,train,sigma,cri]')
    printf '%s\n' "$want_stamp" >"$STAMP"
fi

# --- verify -------------------------------------------------------------------------------------------------

"$VENV/bin/python" - <<'EOF' || die "verification failed: see the message above"
import sys

import bcc

if not hasattr(bcc, "BPF"):
    sys.exit(f"[setup] ERROR: {bcc.__file__} is the unrelated PyPI 'bcc' package, not BCC: pip uninstall bcc")
import sentinel  # noqa: F401

print(f"[setup] verified: bcc {getattr(bcc, '__version__', '?')} and sentinel import from the venv")
EOF

log "done in $((SECONDS - START))s (headers: $headers_mode)"
