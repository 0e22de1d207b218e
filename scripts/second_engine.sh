#!/usr/bin/env bash
# A second Docker engine on this machine, on its own socket and data-root, with the sandbox
# image loaded into it: the two-node cluster test (tests/pipeline/test_cluster.py) gives each
# Ray node its own engine through DOCKER_HOST.
#   bash scripts/second_engine.sh          start it (if not running) and load the image
#   bash scripts/second_engine.sh stop     stop it
# Prints the DOCKER_HOST value to use on stdout. Needs root (or sudo).
set -euo pipefail
SOCK=${SEKBENCH_DOCKER2_SOCK:-/run/sekbench-docker2.sock}
DATA=${SEKBENCH_DOCKER2_DATA:-/var/lib/docker2}
EXEC=${SEKBENCH_DOCKER2_EXEC:-/run/docker2}
PIDF=${SEKBENCH_DOCKER2_PID:-/run/docker2.pid}
LOG=${SEKBENCH_DOCKER2_LOG:-/var/log/sekbench-docker2.log}
HOST="unix://$SOCK"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
say() { printf '[second-engine] %s\n' "$*" >&2; }

if [ "${1:-}" = stop ]; then
  if [ -f "$PIDF" ]; then $SUDO kill "$(cat "$PIDF")" 2>/dev/null || true; fi
  for _ in $(seq 1 40); do [ -S "$SOCK" ] || break; sleep 0.25; done
  say "stopped"
  exit 0
fi

if ! docker -H "$HOST" info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || { say "dockerd is not installed"; exit 1; }
  say "starting a second dockerd on $SOCK (data-root $DATA)"
  $SUDO mkdir -p "$DATA" "$EXEC"
  $SUDO setsid nohup dockerd --iptables=false --bridge=none -H "$HOST" --data-root "$DATA" \
    --exec-root "$EXEC" --pidfile "$PIDF" >"$LOG" 2>&1 </dev/null &
  for _ in $(seq 1 80); do docker -H "$HOST" info >/dev/null 2>&1 && break; sleep 0.25; done
  docker -H "$HOST" info >/dev/null 2>&1 || { say "it did not come up (see $LOG)"; exit 1; }
fi

# The sandbox image: the tag the first engine has (sekbench image build made it there).
TAG=${SEKBENCH_IMAGE_TAG:-$(cd "$(dirname "$0")/.." && "${SEKBENCH_PYTHON:-.venv/bin/python}" -c \
  'from pipeline.image import current_tag; print(current_tag())')}
if ! docker -H "$HOST" image inspect "$TAG" >/dev/null 2>&1; then
  docker image inspect "$TAG" >/dev/null 2>&1 || { say "the first engine has no $TAG (run: sekbench image build)"; exit 1; }
  say "loading $TAG into the second engine"
  docker save "$TAG" | docker -H "$HOST" load >/dev/null
fi
echo "$HOST"
