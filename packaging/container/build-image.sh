#!/usr/bin/env bash
# Build sentinel's container image from the Debian package:
#
#   bash packaging/container/build-image.sh [--deb FILE] [--tag IMAGE] [--base IMAGE] [--no-train]
#
# Without --deb, packaging/build-deb.sh builds one first (--no-train passed on). --base is a Debian 12 image
# (default: the local debootstrap image, localhost/sentinel-test-base:bookworm, built by
# scripts/container-image.sh when absent; elsewhere e.g. docker.io/library/debian:12). Prints the image name.
set -euo pipefail

log() { printf '[build-image] %s\n' "$*" >&2; }
die() {
    printf '[build-image] ERROR: %s\n' "$*" >&2
    exit 1
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEB="" TAG="" BASE=localhost/sentinel-test-base:bookworm
DEB_ARGS=()
while (($#)); do
    case $1 in
    --deb) DEB=${2:?--deb needs a file}; shift ;;
    --tag) TAG=${2:?--tag needs a name}; shift ;;
    --base) BASE=${2:?--base needs an image}; shift ;;
    --no-train) DEB_ARGS+=(--no-train) ;;
    -h | --help) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
command -v podman >/dev/null || die "podman is not installed (scripts/setup.sh installs it)"
if [[ $BASE == localhost/sentinel-test-base:* ]] && ! podman image exists "$BASE"; then
    SENTINEL_TEST_IMAGE=$BASE bash "$REPO/scripts/container-image.sh" >/dev/null
fi
if [[ -z $DEB ]]; then
    DEB=$(bash "$REPO/packaging/build-deb.sh" "${DEB_ARGS[@]}")
fi
[[ -f $DEB ]] || die "no such package: $DEB"
VERSION=$(dpkg-deb -f "$DEB" Version)
TAG=${TAG:-localhost/sentinel:${VERSION//\~/-}}
CTX=$(mktemp -d /var/tmp/sentinel-image.XXXXXX)
trap 'rm -rf "$CTX"' EXIT
cp "$DEB" "$CTX/sentinel.deb"
log "podman build $TAG from $BASE with $(basename "$DEB")"
podman build -q -f "$REPO/packaging/container/Containerfile" --build-arg "BASE=$BASE" \
    --build-arg DEB=sentinel.deb -t "$TAG" "$CTX" >&2 || die "podman build failed"
printf '%s\n' "$TAG"
