#!/usr/bin/env bash
# Build the local base image the container tests run: a minimal Debian (debootstrap minbase) imported into
# podman as localhost/sentinel-test-base:bookworm. No registry is reachable from the test hosts, so the
# image is made from the Debian mirror apt already uses. Built once: when the image exists this does
# nothing. Idempotent; prints the image name on stdout (progress goes to stderr).
#
# Environment:
#   SENTINEL_TEST_IMAGE    image name (default localhost/sentinel-test-base:bookworm)
#   SENTINEL_TEST_SUITE    Debian suite to bootstrap (default bookworm)
#   SENTINEL_TEST_MIRROR   mirror URI (default: the first of apt's sources that carries the suite)
#   SENTINEL_IMAGE_REBUILD=1  remove the image and build it again
set -euo pipefail

log() { printf '[container-image] %s\n' "$*" >&2; }
die() {
    printf '[container-image] ERROR: %s\n' "$*" >&2
    exit 1
}

IMAGE=${SENTINEL_TEST_IMAGE:-localhost/sentinel-test-base:bookworm}
SUITE=${SENTINEL_TEST_SUITE:-bookworm}
START=$SECONDS

[[ $(id -u) -eq 0 ]] || die "must run as root: debootstrap and rootful podman need it"
command -v podman >/dev/null || die "podman is not installed: run scripts/setup.sh"
command -v debootstrap >/dev/null || die "debootstrap is not installed: run scripts/setup.sh"

if [[ ${SENTINEL_IMAGE_REBUILD:-0} == 1 ]] && podman image exists "$IMAGE"; then
    log "SENTINEL_IMAGE_REBUILD=1: removing $IMAGE"
    podman image rm -f "$IMAGE" >/dev/null || die "could not remove $IMAGE"
fi
if podman image exists "$IMAGE"; then
    log "$IMAGE present"
    printf '%s\n' "$IMAGE"
    exit 0
fi

# The first `deb` source of apt that serves $SUITE itself (not -updates or -security), one-line or deb822.
# Files apt ignores (other suffixes, e.g. *.disabled) are ignored here too.
apt_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        # deb [options] URI SUITE COMPONENTS...
        awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        # Paragraphs of Key: value lines; a paragraph with Types: deb, the suite among Suites:, and Enabled
        # not "no" gives its first URI.
        awk -v suite="$SUITE" '
            function flush() {
                wanted = (" " suites " ") ~ (" " suite " ")
                if (types ~ /(^| )deb( |$)/ && wanted && enabled != "no" && uri != "") {
                    print uri
                    found = 1
                }
                types = suites = uri = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); if (found) exit; next }
            {
                key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, ""); val = $0
                if (key == "types") types = val
                else if (key == "suites") suites = val
                else if (key == "uris") { split(val, u, " "); uri = u[1] }
                else if (key == "enabled") enabled = tolower(val)
            }
            END { if (!found) flush() }' "$f"
    done
}

MIRROR=${SENTINEL_TEST_MIRROR:-$(apt_mirror | head -n1)}
[[ -n $MIRROR ]] ||
    die "no apt source serves '$SUITE' (looked in /etc/apt/sources.list{,.d}); set SENTINEL_TEST_MIRROR"

WORK=$(mktemp -d /var/tmp/sentinel-image.XXXXXX)
cleanup() { rm -rf --one-file-system "$WORK"; }
trap cleanup EXIT

log "debootstrap --variant=minbase $SUITE from $MIRROR (about 30 s)"
if ! debootstrap --variant=minbase "$SUITE" "$WORK/root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 20 "$WORK/debootstrap.log" >&2 || true
    tail -n 20 "$WORK/root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    die "debootstrap failed (the last lines are above)"
fi
# Nothing in the image needs apt's lists or caches; they only make the import slower.
rm -rf "$WORK/root/var/lib/apt/lists/"* "$WORK/root/var/cache/apt/"*.bin
rm -f "$WORK/root/var/cache/apt/archives/"*.deb

log "podman import -> $IMAGE"
tar -C "$WORK/root" --numeric-owner -c . |
    podman import --quiet --change 'CMD ["/bin/bash"]' --message "sentinel tests: minbase $SUITE" - "$IMAGE" \
        >/dev/null || die "podman import failed"
podman image exists "$IMAGE" || die "podman import reported success but $IMAGE does not exist"
log "built $IMAGE in $((SECONDS - START))s"
printf '%s\n' "$IMAGE"
