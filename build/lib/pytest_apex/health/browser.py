"""The chat page in a real browser: Playwright driving Debian's Chromium.

Playwright's own browser download cannot work on the hosts this runs on (no access to its
CDN), so the browser is the distribution's `chromium` package (`make setup` installs it) and
is launched by path. Every wait is a Playwright condition bounded by one deadline for the
whole round trip; nothing sleeps.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from playwright.sync_api import Page

DEFAULT_CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_ENV: Final = "APEX_CHROMIUM"  # another browser binary, e.g. on a developer's Mac

# No GPU, no sandbox (containers and CI runners lack the namespaces), and nothing that
# phones home: the host has no internet, and background traffic would only add noise.
CHROMIUM_ARGS: Final[tuple[str, ...]] = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)

AGENT_EVENT_TYPES: Final[tuple[str, ...]] = (
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
)
_TERMINAL: Final = ("agent_completed", "agent_error", "error")


class BrowserUnavailable(RuntimeError):
    """No Chromium binary to drive."""


def chromium_path() -> str:
    """The Chromium to launch: $APEX_CHROMIUM, else Debian's, else `chromium` on PATH."""
    candidates = [os.environ.get(CHROMIUM_ENV, ""), DEFAULT_CHROMIUM, shutil.which("chromium")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise BrowserUnavailable(
        f"no Chromium found ({CHROMIUM_ENV} unset, {DEFAULT_CHROMIUM} missing): run `make setup` "
        "or `apt-get install chromium` (Playwright's own browser download cannot work here)"
    )


@dataclass
class ChatRoundTrip:
    """What the browser saw: each step's outcome, the events listed, and a screenshot."""

    url: str
    page_loaded: bool = False
    logged_in: bool = False
    socket_open: bool = False
    event_types: list[str] = field(default_factory=list)
    seconds: float = 0.0  # from pressing Send to the terminal event (or the deadline)
    screenshot: bytes = b""
    error: str = ""  # the first step that did not happen, and why
    page_errors: list[str] = field(default_factory=list)  # uncaught JS errors, error banner

    @property
    def agent_events_seen(self) -> int:
        """How many of the five agent event types arrived."""
        return len(set(AGENT_EVENT_TYPES) & set(self.event_types))

    @property
    def completed(self) -> bool:
        return "agent_completed" in self.event_types

    def describe(self) -> str:
        steps = (
            f"page loaded {self.page_loaded}, logged in {self.logged_in}, "
            f"socket open {self.socket_open}, events {self.event_types or 'none'}"
        )
        problems = [self.error, *self.page_errors]
        return steps + "".join(f"; {p}" for p in problems if p)


def _remaining_ms(deadline: float) -> float:
    # Playwright treats 0 as "no timeout": never hand it 0 or less.
    return max((deadline - time.monotonic()) * 1000, 1.0)


def chat_round_trip(
    frontend_url: str,
    email: str,
    message: str,
    *,
    timeout_s: float = 30.0,
    executable_path: str | None = None,
) -> ChatRoundTrip:
    """Load the chat page, log in as `email`, send `message`, wait for the run to end.

    Raises `BrowserUnavailable` when there is no browser; every other problem is recorded
    in the result (with a screenshot of the page as it was) for the suite to judge.
    """
    try:  # the `browser` extra; imported here so the rest of the health suite needs none
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BrowserUnavailable(
            "the browser check needs Playwright: pip install 'pytest-apex[browser]'"
        ) from exc
    executable = executable_path or chromium_path()
    url = frontend_url.rstrip("/") + "/"
    result = ChatRoundTrip(url=url)
    deadline = time.monotonic() + timeout_s
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=executable, args=list(CHROMIUM_ARGS), headless=True
            )
        except PlaywrightError as exc:
            raise BrowserUnavailable(
                f"Chromium at {executable} did not start ({exc.message.splitlines()[0]}); "
                "reinstall it with `make setup` or `apt-get install chromium`"
            ) from exc
        try:
            page = browser.new_page(viewport={"width": 1024, "height": 900})
            page.on("pageerror", lambda exc: result.page_errors.append(f"page error: {exc}"))
            try:
                _drive(page, result, email, message, deadline)
            except PlaywrightError as exc:
                # `result.error` names the step that was under way; add Playwright's reason.
                result.error = f"{result.error}: {exc.message.splitlines()[0]}"
            _collect(page, result)
        finally:
            browser.close()
    return result


def _drive(page: Page, result: ChatRoundTrip, email: str, message: str, deadline: float) -> None:
    result.error = "the page did not load"
    response = page.goto(result.url, wait_until="load", timeout=_remaining_ms(deadline))
    login = page.get_by_test_id("login")
    login.wait_for(state="visible", timeout=_remaining_ms(deadline))
    result.page_loaded = response is not None and response.ok

    result.error = "login did not complete"
    page.get_by_test_id("email").fill(email, timeout=_remaining_ms(deadline))
    login.click(timeout=_remaining_ms(deadline))
    page.get_by_test_id("status").filter(has_text=f"Logged in as {email}").wait_for(
        timeout=_remaining_ms(deadline)
    )
    result.logged_in = True

    result.error = "the WebSocket did not open"
    page.locator('[data-testid="ws-state"][data-state="open"]').wait_for(
        timeout=_remaining_ms(deadline)
    )
    result.socket_open = True

    result.error = "the run did not end"
    page.get_by_test_id("message").fill(message, timeout=_remaining_ms(deadline))
    sent = time.monotonic()
    page.get_by_test_id("send").click(timeout=_remaining_ms(deadline))  # waits until enabled
    terminal = ", ".join(f'[data-testid="event"][data-type="{t}"]' for t in _TERMINAL)
    page.locator(terminal).first.wait_for(timeout=_remaining_ms(deadline))
    result.seconds = time.monotonic() - sent
    result.error = ""


def _collect(page: Page, result: ChatRoundTrip) -> None:
    # Whatever happened, keep what the page shows: the events listed, its error banner and
    # a screenshot, so a failure can be read without re-running it.
    from playwright.sync_api import Error as PlaywrightError

    try:
        result.event_types = page.locator('[data-testid="event"]').evaluate_all(
            "rows => rows.map(row => row.dataset.type)"
        )
        banner = page.get_by_test_id("error")
        if banner.is_visible():
            result.page_errors.append(f"page shows error: {banner.inner_text()}")
        result.screenshot = page.screenshot(full_page=True, timeout=10_000)
    except PlaywrightError as exc:
        result.page_errors.append(f"could not read the page: {exc.message.splitlines()[0]}")
