"""Headless Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no websocket, no
third-party client.  The browser test and ``bench/bench_report.py`` use it to open reports, run script in
them, click, and take screenshots.

Chromium reads commands from file descriptor 3 and writes replies and events to descriptor 4, each message
a JSON object terminated by a NUL byte.  One page (a target attached in flat mode) per :class:`Browser`.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import RigError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


class BrowserError(RigError):
    pass


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """``with Browser() as b: b.open(url); b.eval("...")``."""

    def __init__(self, binary: str | None = None, *, width: int = 1400, height: int = 900, timeout: float = 60) -> None:
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise BrowserError("no Chromium found on PATH", hint="install Debian's chromium package (scripts/setup.sh)")
        self.width, self.height, self.timeout = width, height, timeout
        self._id = 0
        self._buf = b""
        self._events: list[dict[str, Any]] = []
        self.session: str | None = None

    # -- process -----------------------------------------------------------------------
    def __enter__(self) -> Browser:
        self._profile = tempfile.mkdtemp(prefix="rig-chromium-")
        # Chromium's log goes to a file: a pipe nobody reads would block it once full
        self._log = open(Path(self._profile) / "chromium.log", "wb")  # noqa: SIM115 (closed in __exit__)
        r, self._to_child = os.pipe()
        self._from_child, w = os.pipe()
        # the child needs the pipe ends as fds 3 and 4: move them above 4 first (os.pipe may have returned 3 or 4),
        # dup2 them into place in the child (dup2's copies are inherited; every other descriptor is close-on-exec)
        to_child_r, from_child_w = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 10), fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(r)
        os.close(w)
        args = [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync", "--mute-audio",
                "--hide-scrollbars", "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
                f"--window-size={self.width},{self.height}", "about:blank"]

        def child_fds() -> None:
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(args, close_fds=False, preexec_fn=child_fds,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(to_child_r)
        os.close(from_child_w)
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.call("Page.enable")
            self.call("Runtime.enable")
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self._send("Browser.close", {}, session=False)
                    self.proc.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            for fd in (self._to_child, self._from_child):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._log.close()
            shutil.rmtree(self._profile, ignore_errors=True)

    # -- protocol ----------------------------------------------------------------------
    def _send(self, method: str, params: dict[str, Any] | None, *, session: bool = True) -> int:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        try:
            os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserError(f"Chromium exited (status {self.proc.poll()}): {self._stderr()}") from None
        return self._id

    def _stderr(self) -> str:
        try:
            return (Path(self._profile) / "chromium.log").read_bytes()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Chromium did not answer within {self.timeout:.0f} s")
            r, _, _ = select.select([self._from_child], [], [], left)
            if r:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    self.proc.wait(5)
                    raise BrowserError(f"Chromium exited (status {self.proc.poll()}): {self._stderr()}")
                self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return json.loads(msg)

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        mid = self._send(method, params)
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == mid:
                if "error" in m:
                    raise BrowserError(f"{method}: {m['error'].get('message')}")
                return m.get("result", {})
            if "method" in m:
                self._events.append(m)

    def wait_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        for i, e in enumerate(self._events):
            if e["method"] == method:
                return self._events.pop(i)
        while True:
            m = self._read(deadline)
            if m.get("method") == method:
                return m
            if "method" in m:
                self._events.append(m)

    # -- pages -------------------------------------------------------------------------
    def open(self, url: str | Path) -> float:
        """Navigate and wait for the load event; returns the wall time from navigation to load (s)."""
        if isinstance(url, Path):
            url = url.resolve().as_uri()
        self._events = [e for e in self._events if e["method"] != "Page.loadEventFired"]
        t0 = time.perf_counter()
        self.call("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")
        return time.perf_counter() - t0

    def eval(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise BrowserError(f"script error: {d.get('exception', {}).get('description') or d.get('text')}")
        return r["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed + released) at the centre of the first element matching ``selector``."""
        box = self.eval(f"(function(){{var e=document.querySelector({json.dumps(selector)}); if(!e) return null;"
                        "e.scrollIntoView({block:'center'}); var r=e.getBoundingClientRect();"
                        "return [r.left+r.width/2, r.top+r.height/2];})()")
        if box is None:
            raise BrowserError(f"no element matches {selector!r}")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1})

    def type(self, selector: str, text: str) -> None:
        """Focus the element and type ``text`` as keyboard input."""
        self.click(selector)
        self.call("Input.insertText", {"text": text})

    def screenshot(self, path: Path, *, full_page: bool = False, clip: tuple[float, float, float, float] | None = None,
                   selector: str | None = None) -> Path:
        """A PNG of the viewport, the whole page, a rectangle (x, y, width, height in page coordinates) or the box
        of the first element matching ``selector``."""
        params: dict[str, Any] = {"format": "png"}
        if selector is not None:
            clip = self.eval(f"(function(){{var r = document.querySelector({json.dumps(selector)})"
                             ".getBoundingClientRect(); return [r.left + scrollX, r.top + scrollY, r.width, r.height];})()")
        if clip is not None:
            x, y, w, h = clip
            params.update(captureBeyondViewport=True, clip={"x": x, "y": y, "width": w, "height": h, "scale": 1})
        elif full_page:
            w, h = self.eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": w, "height": min(h, 8000), "scale": 1})
        data = self.call("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
