"""Open a local HTML file in headless Chromium and report what a reader would see.

A test helper (not a test): it drives the browser over the Chrome DevTools Protocol on a
pair of pipes (``--remote-debugging-pipe``: the browser reads commands on fd 3 and writes
replies on fd 4), so it needs no driver, no websocket library and no network port. It
never downloads anything: it uses the browser installed on the machine (Debian's
``chromium``; ``$RESLAB_BROWSER`` names another binary).

    with Browser() as browser:
        page = browser.open("report.html")
    assert page.images_loaded and not page.console_errors and not page.blank
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import select
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Browser", "BrowserError", "PageReport", "find_browser", "is_blank", "require_browser"]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# Headless, as root in a container, and quiet on the network: no update checks, no sync,
# no field trials, no pings. --remote-debugging-pipe opens the protocol on fds 3 and 4.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-field-trial-config",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--disable-dev-shm-usage",
    "--no-pings",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--remote-debugging-pipe",
)

# Waits for every <img> (loaded or failed) and the fonts, then lists the images.
IMAGES_JS = """
(async () => {
  const settle = img => img.complete ? null : new Promise(done => {
    img.addEventListener('load', done); img.addEventListener('error', done); });
  const all = Promise.all([...Array.from(document.images).map(settle), document.fonts.ready]);
  await Promise.race([all, new Promise(done => setTimeout(done, %d))]);
  return Array.from(document.images).map(img => ({
    src: img.currentSrc || img.src, complete: img.complete,
    naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight}));
})()
"""


class BrowserError(RuntimeError):
    """The browser could not be started, or did not answer as the protocol says."""


@dataclass
class PageReport:
    """What a page showed: its images, its console errors and a screenshot."""

    url: str
    images: list[dict] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    blank: bool = True

    @property
    def broken_images(self) -> list[str]:
        """Sources (shortened) of the images that did not load (``naturalWidth == 0``)."""
        return [_short(img["src"]) for img in self.images if not img["naturalWidth"]]

    @property
    def images_loaded(self) -> bool:
        return not self.broken_images

    def problems(self) -> list[str]:
        """Everything a reader would notice, one line each; empty for a good page."""
        out = [f"image not loaded: {src}" for src in self.broken_images]
        out += [f"console error: {text}" for text in self.console_errors]
        out += [f"request failed: {text}" for text in self.failed_requests]
        return out + (["the screenshot is blank (one colour)"] if self.blank else [])


def find_browser() -> str | None:
    """The Chromium/Chrome binary to use: ``$RESLAB_BROWSER``, else the first on ``PATH``."""
    env = os.environ.get("RESLAB_BROWSER")
    if env:
        found = shutil.which(env)
        if found is None:  # a named browser that is missing is an error, not a skip
            raise BrowserError(f"RESLAB_BROWSER={env!r} is not an executable")
        return found
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


def require_browser() -> str:
    """The browser binary, or skip the calling test when none is installed."""
    import pytest

    path = find_browser()
    if path is None:
        pytest.skip(
            "no Chromium/Chrome browser installed (Debian: apt-get install chromium; or set "
            "RESLAB_BROWSER): the HTML pages cannot be checked in a real browser"
        )
    return path


def is_blank(png: bytes) -> bool:
    """True when every pixel of the PNG has the same colour."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        bands = image.convert("RGBA").getextrema()
    return all(low == high for low, high in bands)


def _short(src: str, limit: int = 80) -> str:
    return src if len(src) <= limit else src[: limit - 3] + "..."


class Browser:
    """One headless browser process; :meth:`open` loads a page in a fresh tab.

    Args:
        binary: the browser (default :func:`find_browser`).
        width, height: the viewport; screenshots cover the whole page at this width.
        timeout: seconds allowed for the browser to start and for each page.
        offline: make every http(s) request fail, as on a machine without a network, so a
            page that needs one shows errors instead of quietly fetching.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        width: int = 1280,
        height: int = 800,
        timeout: float = 60.0,
        offline: bool = True,
    ) -> None:
        self.binary = binary or find_browser()
        if self.binary is None:
            raise BrowserError("no Chromium/Chrome browser found (apt-get install chromium)")
        self.width, self.height, self.timeout, self.offline = width, height, timeout, offline
        self._pid: int | None = None
        self._profile: str | None = None
        self._log: Path | None = None
        self._to_browser = self._from_browser = -1
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []

    # ------------------------------------------------------------------ process
    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if self._pid is not None:
            raise BrowserError("the browser is already running")
        try:
            self._spawn()
            self.call("Browser.getVersion")  # fails here, with the log, if it did not start
        except BaseException:
            self.close()
            raise

    def _spawn(self) -> None:
        self._profile = tempfile.mkdtemp(prefix="reslab-browser-")
        self._log = Path(self._profile) / "browser.log"
        commands_r, self._to_browser = os.pipe()
        self._from_browser, replies_w = os.pipe()
        # Move the child's ends above fd 4, so the dup2s onto 3 and 4 cannot clobber them.
        child_r = fcntl.fcntl(commands_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(replies_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(commands_r)
        os.close(replies_w)
        log_fd = os.open(self._log, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        argv = [
            self.binary,
            *FLAGS,
            f"--user-data-dir={self._profile}",
            f"--window-size={self.width},{self.height}",
            "about:blank",
        ]
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 1),
            (os.POSIX_SPAWN_DUP2, log_fd, 2),
            (os.POSIX_SPAWN_DUP2, child_r, 3),
            (os.POSIX_SPAWN_DUP2, child_w, 4),
        ]
        # Crash reports and caches go to the temporary profile too, not to ~/.config.
        env = {**os.environ, "XDG_CONFIG_HOME": self._profile, "XDG_CACHE_HOME": self._profile}
        try:
            # Its own process group: close() can end the browser and all its helpers.
            self._pid = os.posix_spawn(self.binary, argv, env, file_actions=actions, setpgroup=0)
        finally:
            for fd in (child_r, child_w, log_fd):
                os.close(fd)

    def close(self) -> None:
        if self._pid is not None:
            with contextlib.suppress(BrowserError):
                self.call("Browser.close", timeout=10)
            self._reap(self._pid)
            self._pid = None
        for fd in (self._to_browser, self._from_browser):
            if fd >= 0:
                os.close(fd)
        self._to_browser = self._from_browser = -1
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    @staticmethod
    def _reap(pid: int, grace: float = 10.0) -> None:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
            time.sleep(0.05)
        else:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        with contextlib.suppress(ProcessLookupError):  # helpers left in the browser's group
            os.killpg(pid, signal.SIGKILL)

    # ------------------------------------------------------------------ protocol
    def call(
        self, method: str, params: dict | None = None, session: str | None = None, timeout=None
    ) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._write(json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout or self.timeout, f"the reply to {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message', reply)}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float) -> dict:
        for i, event in enumerate(self._events):
            if event.get("method") == method and event.get("sessionId") == session:
                return self._events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            event = self._read(max(deadline - time.monotonic(), 0), method)
            if event.get("method") == method and event.get("sessionId") == session:
                return event
            self._events.append(event)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._to_browser, view)
            except (BrokenPipeError, OSError) as exc:
                raise BrowserError(f"the browser is gone ({exc}){self._log_tail()}") from exc
            view = view[written:]

    def _read(self, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(left, 0))
            if not ready:
                raise BrowserError(f"no answer from the browser within {timeout:.0f} s ({what})")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError(f"the browser closed the pipe ({what}){self._log_tail()}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def _log_tail(self) -> str:
        if self._log is None or not self._log.exists():
            return ""
        text = self._log.read_text(errors="replace").strip().splitlines()[-15:]
        return "\nbrowser log:\n" + "\n".join(text) if text else ""

    # ------------------------------------------------------------------ pages
    def open(self, path: str | Path, *, full_page: bool = True) -> PageReport:
        """Load a local file in a new tab; wait for it, its images and fonts; report."""
        path = Path(path).resolve()
        if not path.is_file():
            raise FileNotFoundError(path)
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        session = session["sessionId"]
        try:
            return self._load(path.as_uri(), session, full_page)
        finally:
            self.call("Target.closeTarget", {"targetId": target})
            self._events = [e for e in self._events if e.get("sessionId") != session]

    def _load(self, url: str, session: str, full_page: bool) -> PageReport:
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        if self.offline:
            conditions = {"offline": True, "latency": 0, "downloadThroughput": -1,
                          "uploadThroughput": -1}  # fmt: skip
            self.call("Network.emulateNetworkConditions", conditions, session)
        self._set_viewport(session, self.height)
        nav = self.call("Page.navigate", {"url": url}, session)
        if nav.get("errorText"):
            raise BrowserError(f"{url}: {nav['errorText']}")
        self.wait_event("Page.loadEventFired", session, self.timeout)
        if full_page:  # a viewport as tall as the page: lazy images load, one screenshot
            height = self._evaluate(session, "document.documentElement.scrollHeight")
            self._set_viewport(session, min(max(int(height), self.height), 16384))
        images = self._evaluate(session, IMAGES_JS % int(self.timeout * 1000 / 2), wait=True)
        shot = self.call("Page.captureScreenshot", {"format": "png"}, session)
        png = base64.b64decode(shot["data"])
        errors, failed = self._problems(session)
        return PageReport(url, images, errors, failed, png, is_blank(png))

    def _set_viewport(self, session: str, height: int) -> None:
        metrics = {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.call("Emulation.setDeviceMetricsOverride", metrics, session)

    def _evaluate(self, session: str, expression: str, wait: bool = False):
        params = {"expression": expression, "returnByValue": True, "awaitPromise": wait}
        result = self.call("Runtime.evaluate", params, session)
        if "exceptionDetails" in result:
            raise BrowserError(f"evaluating the page failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def _problems(self, session: str) -> tuple[list[str], list[str]]:
        errors, failed, urls = [], [], {}
        for event in (e for e in self._events if e.get("sessionId") == session):
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                urls[params["requestId"]] = params["request"]["url"]
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(_arg_text(a) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                exc = details.get("exception", {})
                errors.append(exc.get("description") or details.get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                errors.append(f"{entry.get('text', '')} {_short(entry.get('url', ''))}".strip())
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                url = _short(urls.get(params["requestId"], "?"))
                failed.append(f"{url}: {params.get('errorText', 'failed')}")
        return errors, failed


def _arg_text(arg: dict) -> str:
    if "value" in arg:
        return str(arg["value"])
    return str(arg.get("description", arg.get("type", "")))
