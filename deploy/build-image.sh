#!/usr/bin/env bash
# Build the statebus image (deploy/Dockerfile) from this checkout, with no package index inside the build.
#
#   deploy/build-image.sh [TAG] [BASE]       TAG default statebus:local, BASE default debian:bookworm-slim
#
# 1. `pip wheel` builds statebus-server from the repository, and fetches a wheel of every dependency,
#    into a fresh build context (a temp folder): on the host, with the host's pip and its cache.
#    The host's Python must be the image's (Debian bookworm: 3.11) for the compiled wheels to match.
# 2. `docker build --network host` installs Debian's python3 (apt, from the base's sources) and then
#    the wheels offline (--no-index).
# Environment: DOCKER (the docker command, default docker), PYTHON (default python3), and DOCKER_HOST
# as docker reads it. Used as is by CI (tests/deploy/test_image.py).
set -euo pipefail

TAG="${1:-statebus:local}"
BASE="${2:-debian:bookworm-slim}"
DOCKER="${DOCKER:-docker}"
PYTHON="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

want="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$want" != "3.11" ]; then
    echo "build-image.sh: $PYTHON is Python $want; the image runs Debian bookworm's 3.11, so its wheels must be built by a 3.11 (set PYTHON)" >&2
    exit 1
fi

CONTEXT="$(mktemp -d "${TMPDIR:-/tmp}/statebus-image.XXXXXX")"
trap 'rm -rf "$CONTEXT"' EXIT
# Copy the sources (not .venv, node_modules or the data of a running node) so the wheel is built
# from exactly the tracked package files.
mkdir -p "$CONTEXT/src" "$CONTEXT/wheels"
cp "$ROOT/pyproject.toml" "$ROOT/README.md" "$CONTEXT/src/"
cp -r "$ROOT/statebus" "$CONTEXT/src/statebus"
find "$CONTEXT/src" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$CONTEXT/wheels" "$CONTEXT/src"
rm -rf "$CONTEXT/src"
cp "$ROOT/deploy/Dockerfile" "$CONTEXT/Dockerfile"

# The classic builder: Debian's docker.io has no buildx, and --network host is all it needs.
DOCKER_BUILDKIT=0 "$DOCKER" build --network host --build-arg "BASE=$BASE" -t "$TAG" "$CONTEXT"
