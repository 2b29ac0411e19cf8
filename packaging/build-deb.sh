#!/usr/bin/env bash
# Build the Debian package: dist/sentinel_<version>_<arch>.deb from this checkout, in one command.
#
#   bash packaging/build-deb.sh [--no-train] [--version V] [--out DIR]
#
# The agent gets its own virtualenv, /opt/sentinel/venv (Debian's python3 with --system-site-packages, for
# python3-bpfcc), with the runtime dependencies installed from packaging/requirements-train.txt (pinned,
# --require-hashes; requirements.txt with --no-train: no scikit-learn, so no host-model training) and the
# wheel built from this checkout. The venv is built in a staging directory and its paths rewritten to
# /opt/sentinel/venv, so every installed file belongs to the package (dpkg -L, dpkg -V, clean removal).
# Needs: root or fakeroot for dpkg-deb ownership (root:root via --root-owner-group), python3-venv,
# python3-pip, dpkg-dev; network to PyPI (or a pip cache) for the pinned dependencies.
#
# Environment: SENTINEL_DEB_COMPRESS=xz|gzip|zstd|none (default xz; tests use gzip for speed).
set -euo pipefail

log() { printf '[build-deb] %s\n' "$*" >&2; }
die() {
    printf '[build-deb] ERROR: %s\n' "$*" >&2
    exit 1
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PKG="$REPO/packaging"
PYTHON=/usr/bin/python3
TRAIN=1
VERSION=""
OUT="$REPO/dist"
while (($#)); do
    case $1 in
    --no-train) TRAIN=0 ;;
    --version) VERSION=${2:?--version needs a value}; shift ;;
    --out) OUT=${2:?--out needs a directory}; shift ;;
    -h | --help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

for tool in dpkg-deb dpkg-architecture; do
    command -v "$tool" >/dev/null || die "$tool is missing: apt-get install dpkg-dev (scripts/setup.sh does)"
done
"$PYTHON" -c "import venv" 2>/dev/null || die "python3-venv is missing: apt-get install python3-venv"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "python3-pip is missing: apt-get install python3-pip"

ARCH=$(dpkg-architecture -qDEB_HOST_ARCH)
PYVER=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
PYNEXT=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1] + 1}")')
[[ -n $VERSION ]] || VERSION=$("$PYTHON" -c "import ast, sys; t = open(sys.argv[1]).read(); \
print(next(n.value.value for n in ast.parse(t).body if isinstance(n, ast.Assign) and \
n.targets[0].id == '__version__'))" "$REPO/sentinel/__init__.py")
[[ $VERSION =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "not a Debian version: $VERSION"
REQS="$PKG/requirements-train.txt"
((TRAIN)) || REQS="$PKG/requirements.txt"

WORK=$(mktemp -d /var/tmp/sentinel-deb.XXXXXX)
trap 'rm -rf --one-file-system "$WORK"' EXIT
ROOT="$WORK/root"
STAGE_VENV="$ROOT/opt/sentinel/venv"
FINAL_VENV=/opt/sentinel/venv
START=$SECONDS

log "sentinel $VERSION ($ARCH, python $PYVER, $([[ $TRAIN == 1 ]] && echo 'with' || echo 'without') train extra)"
log "building the wheel"
"$PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps -w "$WORK/wheel" "$REPO" >&2 ||
    die "building the wheel failed"
WHEEL=$(ls "$WORK"/wheel/sentinel-*.whl)

log "virtualenv $FINAL_VENV: $(basename "$REQS") (--require-hashes) and the wheel"
"$PYTHON" -m venv --system-site-packages --without-pip "$STAGE_VENV"
pip_in() { "$PYTHON" -m pip --disable-pip-version-check --python "$STAGE_VENV/bin/python" "$@"; }
pip_in install -q --no-compile --require-hashes -r "$REQS" >&2 || die "installing $(basename "$REQS") failed"
pip_in install -q --no-compile --no-deps "$WHEEL" >&2 || die "installing the wheel failed"
# The staging path is in script shebangs and activate scripts: point them at the installed location.
grep -rlF "$STAGE_VENV" "$STAGE_VENV" | while read -r f; do
    sed -i "s|$STAGE_VENV|$FINAL_VENV|g" "$f"
done
! grep -rqF "$WORK" "$STAGE_VENV/bin" "$STAGE_VENV/pyvenv.cfg" || die "staging path left in the venv"
find "$STAGE_VENV" -name __pycache__ -type d -prune -exec rm -rf {} +

log "files"
install -d "$ROOT/usr/bin" "$ROOT/usr/share/sentinel/models" "$ROOT/usr/lib/sentinel" "$ROOT/etc/sentinel" \
    "$ROOT/etc/logrotate.d" "$ROOT/usr/lib/tmpfiles.d" "$ROOT/usr/share/doc/sentinel/examples" "$ROOT/DEBIAN"
ln -s "$FINAL_VENV/bin/sentinel" "$ROOT/usr/bin/sentinel"
cp -r "$REPO/rules" "$ROOT/usr/share/sentinel/rules"
rm -f "$ROOT"/usr/share/sentinel/rules/*.fixtures.yaml  # rule tests: the checkout's, not a host's
cp -r "$REPO/models/default" "$ROOT/usr/share/sentinel/models/default"
install -d "$ROOT/usr/share/sentinel/bpf_probes"
install -m 0644 "$REPO"/bpf_probes/*.c "$REPO"/bpf_probes/*.h "$REPO/bpf_probes/LICENSE" \
    "$ROOT/usr/share/sentinel/bpf_probes/"
install -m 0755 "$PKG/debian/link-headers" "$ROOT/usr/lib/sentinel/link-headers"
# The configuration: packaging/sentinel.yaml with its example SIEM sink commented out (it needs a token and a
# server) and the alert file left to logrotate (/etc/logrotate.d/sentinel).
awk '/^  - kind: http/ { f = 1 } /^[a-z]/ { f = 0 }
    /^    rotate_bytes:/ && !f { print "    rotate_bytes: 0              # logrotate rotates it: /etc/logrotate.d/sentinel"; next }
    { if (f && $0 != "") print "# " $0; else print }' "$PKG/sentinel.yaml" >"$ROOT/etc/sentinel/sentinel.yaml"
install -m 0644 "$PKG/debian/rules.local.yaml" "$ROOT/etc/sentinel/rules.local.yaml"
install -m 0644 "$PKG/debian/sentinel.logrotate" "$ROOT/etc/logrotate.d/sentinel"
install -m 0644 "$PKG/debian/sentinel.tmpfiles" "$ROOT/usr/lib/tmpfiles.d/sentinel.conf"
install -m 0644 "$PKG/sentinel.yaml" "$ROOT/usr/share/doc/sentinel/examples/sentinel.yaml"
install -m 0644 "$REPO/README.md" "$REPO/CHANGELOG.md" "$ROOT/usr/share/doc/sentinel/" 2>/dev/null ||
    install -m 0644 "$REPO/README.md" "$ROOT/usr/share/doc/sentinel/"
{
    printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: sentinel\n\n'
    printf 'Files: *\nLicense: Apache-2.0\n On Debian systems: /usr/share/common-licenses/Apache-2.0.\n\n'
    printf 'Files: bpf_probes/*\nComment: installed as /usr/share/sentinel/bpf_probes (BPF programs, GPL-only helpers)\n'
    printf 'License: GPL-2.0-only\n On Debian systems: /usr/share/common-licenses/GPL-2.\n'
} >"$ROOT/usr/share/doc/sentinel/copyright"
CONFFILES=(/etc/sentinel/sentinel.yaml /etc/sentinel/rules.local.yaml /etc/logrotate.d/sentinel)
if [[ -f $PKG/systemd/sentinel.service ]]; then
    install -D -m 0644 "$PKG/systemd/sentinel.service" "$ROOT/lib/systemd/system/sentinel.service"
    log "unit: packaging/systemd/sentinel.service"
else
    log "no packaging/systemd/sentinel.service in this checkout: the package has no unit"
fi

# The shipped configuration must load with the shipped rules, as installed (paths rewritten to the stage).
log "checking the configuration against the staged rules"
sed "s|/usr/share/sentinel/rules|$ROOT/usr/share/sentinel/rules|; s|/etc/sentinel/rules.local.yaml|$ROOT/etc/sentinel/rules.local.yaml|" \
    "$ROOT/etc/sentinel/sentinel.yaml" >"$WORK/check.yaml"
SENTINEL_RULES="$ROOT/usr/share/sentinel/rules" "$STAGE_VENV/bin/python" -m sentinel.cli config check \
    --config "$WORK/check.yaml" >"$WORK/check.out" 2>&1 || { cat "$WORK/check.out" >&2; die "config check failed"; }

log "control"
for s in postinst prerm postrm; do install -m 0755 "$PKG/debian/$s" "$ROOT/DEBIAN/$s"; done
printf '%s\n' "${CONFFILES[@]}" >"$ROOT/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
if ((TRAIN)); then
    NOTE="Built with the train extra (scikit-learn): --model auto learns this host and trains its model."
else
    NOTE="Built without the train extra: --model auto is refused (rules only) until scikit-learn is added."
fi
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/g" -e "s/@SIZE@/$SIZE/" -e "s/@TRAIN_NOTE@/$NOTE/" \
    -e "s/@PYTHON_DEPENDS@/python3 (>= $PYVER), python3 (<< $PYNEXT)/" \
    "$PKG/debian/control.in" >"$ROOT/DEBIAN/control"

mkdir -p "$OUT"
DEB="$OUT/sentinel_${VERSION}_${ARCH}.deb"
log "dpkg-deb -> $DEB"
dpkg-deb --root-owner-group -Z"${SENTINEL_DEB_COMPRESS:-xz}" --build "$ROOT" "$DEB" >&2
log "built in $((SECONDS - START))s: $(du -h "$DEB" | cut -f1)"
printf '%s\n' "$DEB"
