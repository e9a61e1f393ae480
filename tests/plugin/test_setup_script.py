"""scripts/setup.sh's browser step (Debian's chromium package, Playwright's build on Ubuntu),
the images step's download of the prometheus .deb and what the tester step puts in its
image's build context.

The script is sourced (it runs nothing then) and single functions are called, with the
commands that would install anything replaced by stand-ins that only say what they were
asked.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "setup.sh"

# A python that answers Playwright's executable path and "installs" it when asked to.
FAKE_PYTHON = """#!/bin/bash
if [ "$1" = -c ]; then echo "$FAKE_CHROME"; exit 0; fi
echo "python $* (browsers in $PLAYWRIGHT_BROWSERS_PATH)" >> "$FAKE_LOG"
printf '#!/bin/sh\\n' > "$FAKE_CHROME"; chmod +x "$FAKE_CHROME"
"""


def bash(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FAKE_CHROME": str(tmp_path / "chrome"),
        "FAKE_LOG": str(tmp_path / "calls.log"),
    }
    env.pop("PLAYWRIGHT_BROWSERS_PATH", None)
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source {SETUP}; {script}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("os_release", "ubuntu"),
    [
        ('PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\nID_LIKE=debian\n', True),
        ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n', False),
        ('NAME="Linux Mint"\nID=linuxmint\nID_LIKE="ubuntu debian"\n', False),
    ],
)
def test_ubuntu_is_told_by_os_release(tmp_path: Path, os_release: str, ubuntu: bool) -> None:
    path = tmp_path / "os-release"
    path.write_text(os_release, encoding="utf-8")
    result = bash(f"is_ubuntu {path} && echo ubuntu || echo other", tmp_path)
    assert result.stdout.strip() == ("ubuntu" if ubuntu else "other"), result.stderr
    assert bash(f"is_ubuntu {tmp_path / 'missing'} || echo other", tmp_path).stdout == "other\n"


def test_sourcing_the_script_runs_no_step(tmp_path: Path) -> None:
    result = bash("true", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_on_ubuntu_chromium_comes_from_playwright_once(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON, encoding="utf-8")
    python.chmod(0o755)
    link = tmp_path / "bin" / "chromium"
    link.parent.mkdir()
    prepare = (
        f"is_ubuntu() {{ true; }}; ROOT={tmp_path}; PYTHON={python}; STATE_DIR={tmp_path}; "
        f"PLAYWRIGHT_CHROMIUM={link}; as_root_or_fail() {{ true; }}; "
        "apt_install() { echo apt-get install $* >> $FAKE_LOG; }; "
    )
    first = bash(prepare + "step_browser", tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"chromium ready: {link} -> {tmp_path / 'chrome'}" in first.stdout
    assert link.resolve() == tmp_path / "chrome"
    second = bash(prepare + "step_browser", tmp_path)
    assert "chromium present (Playwright's" in second.stdout
    # Installed once, with its system libraries, for every user; never Ubuntu's snap package.
    assert (tmp_path / "calls.log").read_text(encoding="utf-8").splitlines() == [
        "python -m playwright install --with-deps chromium (browsers in /opt/ms-playwright)"
    ]


def test_on_debian_chromium_is_still_the_distributions(tmp_path: Path) -> None:
    prepare = (
        f"is_ubuntu() {{ false; }}; PYTHON={tmp_path / 'no-python'}; "
        "apt_install() { echo apt-get install $*; }; "
    )
    result = bash(prepare + "step_browser", tmp_path)
    assert result.returncode == 0, result.stderr
    expected = (
        "[setup] chromium present"
        if os.access("/usr/bin/chromium", os.X_OK)
        else "apt-get install --no-install-recommends chromium fonts-dejavu-core"
    )
    assert result.stdout.strip() == expected


# apt and dpkg stand-ins: the candidate version is $FAKE_VERSION; a download writes a .deb
# named like Debian's into the working directory and logs it; the listing of any .deb holds
# the prometheus binary unless $FAKE_EMPTY_DEB is set.
FAKE_APT = """
apt-cache() { printf 'prometheus:\\n  Installed: (none)\\n  Candidate: %s\\n' "$FAKE_VERSION"; }
apt-get() {
  echo "apt-get $* in $(basename "$PWD")" >> "$FAKE_LOG"
  echo "deb of ${3#prometheus=}" > "prometheus_${3#prometheus=}_amd64.deb"
}
dpkg-deb() {
  [ -n "${FAKE_EMPTY_DEB:-}" ] || echo '-rwxr-xr-x root/root 1 2026-01-01 ./usr/bin/prometheus'
}
apt_update_once() { echo "apt-get update" >> "$FAKE_LOG"; }
"""


def fetch_deb(tmp_path: Path, version: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = f"{FAKE_APT}DEBS_DIR={tmp_path / 'debs'}; export FAKE_VERSION={version}; "
    script += "".join(f"export {k}={v}; " for k, v in env.items())
    return bash(script + "fetch_prometheus_deb", tmp_path)


def test_the_prometheus_deb_is_downloaded_once_per_version(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    first = fetch_deb(tmp_path, "2.42.0+ds-5")
    assert first.returncode == 0, first.stderr
    deb = tmp_path / "debs" / "prometheus.deb"
    assert deb.read_text() == "deb of 2.42.0+ds-5\n"
    assert (tmp_path / "debs" / "prometheus.version").read_text() == "2.42.0+ds-5\n"
    again = fetch_deb(tmp_path, "2.42.0+ds-5")
    assert "prometheus .deb 2.42.0+ds-5 present" in again.stdout
    newer = fetch_deb(tmp_path, "2.42.0+ds-6")
    assert newer.returncode == 0, newer.stderr
    assert deb.read_text() == "deb of 2.42.0+ds-6\n"
    downloads = [line.split(" in ")[0] for line in log.read_text().splitlines()]
    assert downloads == [
        "apt-get download -q prometheus=2.42.0+ds-5",
        "apt-get download -q prometheus=2.42.0+ds-6",
    ]
    # Downloaded in a scratch directory, never into the build context as it is.
    assert not list((tmp_path / "debs").glob("prometheus_*.deb"))


def test_a_prometheus_deb_without_the_binary_is_refused(tmp_path: Path) -> None:
    result = fetch_deb(tmp_path, "9.9", FAKE_EMPTY_DEB="1")
    assert result.returncode != 0
    assert "holds no ./usr/bin/prometheus" in result.stderr
    assert not (tmp_path / "debs" / "prometheus.deb").exists()


def test_no_prometheus_candidate_fails_after_an_apt_update(tmp_path: Path) -> None:
    result = fetch_deb(tmp_path, "")
    assert result.returncode != 0
    assert "no prometheus package" in result.stderr
    assert (tmp_path / "calls.log").read_text().splitlines() == ["apt-get update"]


def test_the_tester_image_gets_every_dependency_of_the_plugin(tmp_path: Path) -> None:
    """The tester step downloads wheels for exactly [project.dependencies] (plus the one
    that redis needs on the images' Python, whose marker pip judges with the host's)."""
    result = bash("tester_dependencies", tmp_path)
    assert result.returncode == 0, result.stderr
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert result.stdout.splitlines() == [
        *declared["project"]["dependencies"],
        "async-timeout>=4.0.3",
    ]


def test_the_plugin_wheel_is_rebuilt_only_when_its_sources_change(tmp_path: Path) -> None:
    first = bash("plugin_sources_digest", tmp_path)
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.strip()) == 16
    # Byte code is not a source: running the tests must not cost the image its cache.
    cache = ROOT / "pytest_apex" / "__pycache__"
    existed = cache.is_dir()
    stray = cache / "apex-digest-probe.cpython-311.pyc"
    cache.mkdir(exist_ok=True)
    try:
        stray.write_bytes(b"\0")
        assert bash("plugin_sources_digest", tmp_path).stdout == first.stdout
    finally:
        stray.unlink()
        if not existed:
            cache.rmdir()
