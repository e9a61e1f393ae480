"""scripts/setup.sh's browser step: Debian's chromium package, Playwright's build on Ubuntu.

The script is sourced (it runs nothing then) and single functions are called, with the
commands that would install anything replaced by stand-ins that only say what they were
asked.
"""

from __future__ import annotations

import os
import subprocess
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
