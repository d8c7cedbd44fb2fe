"""A headless Chromium driven over the DevTools protocol, for the UI tests.

Chromium started with `--remote-debugging-pipe` reads protocol commands (JSON, each ended by a NUL
byte) on its file descriptor 3 and writes the answers and events on 4, so a test can load a page,
run JavaScript in it, click and type as a user does (real input events, dispatched by the browser)
and take screenshots, with no driver to install beside Debian's `chromium`.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import signal
import subprocess
import tempfile
import time
from pathlib import Path


class BrowserError(RuntimeError):
    pass


def _above_9(fd: int) -> int:
    """`fd` moved above 9, clear of the descriptors 3 and 4 that the child's shell sets."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """One headless Chromium with one page (tab). Use as a context manager."""

    def __init__(self, chromium: str, window: tuple[int, int]) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="seqbench-chromium-", ignore_cleanup_errors=True)
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        to_browser_r, from_browser_w = _above_9(to_browser_r), _above_9(from_browser_w)

        args = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}",
                f"--window-size={window[0]},{window[1]}", "about:blank"]
        # bash puts the pipe's ends on the protocol's descriptors (dash takes single digits only)
        wrapper = f'exec 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-; exec "$@"'
        self._proc = subprocess.Popen(["bash", "-c", wrapper, "bash", *args], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      pass_fds=(to_browser_r, from_browser_w), start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.window = window
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.page("Page.enable")
        self.page("Emulation.setDeviceMetricsOverride", width=window[0], height=window[1], deviceScaleFactor=1,
                  mobile=False)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    # -- the protocol ---------------------------------------------------------------------------
    def send(self, method: str, session: str | None = None, timeout_s: float = 30, **params) -> dict:
        """Send one command and wait for its answer (events in between are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self._read(deadline, method)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def _read(self, deadline: float, waiting_for: str) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self._proc.poll() is not None:
                raise BrowserError(f"no answer to {waiting_for} (chromium {'exited' if self._proc.poll() is not None else 'timed out'})")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"chromium closed the pipe while {waiting_for} was pending")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def page(self, method: str, **params) -> dict:
        """A command to the page's session."""
        return self.send(method, session=self._session, **params)

    # -- what a test does -----------------------------------------------------------------------
    def goto(self, url: str) -> None:
        self.page("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable results)."""
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60, what: str = ""):
        """Poll `expression` until it is truthy; its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout_s:.0f}s waiting for {what or expression}")
            time.sleep(0.25)

    def click(self, selector: str, text: str | None = None) -> None:
        """A real mouse click (pressed and released by the browser) at the centre of the first
        visible element matching the CSS `selector` (and whose text is `text`, when given)."""
        box = self.evaluate(
            f"(() => {{ const e = Array.from(document.querySelectorAll({json.dumps(selector)})).find(e =>"
            f" e.getClientRects().length && ({json.dumps(text)} === null || e.textContent.trim() === {json.dumps(text)}));"
            f" if (!e) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();"
            f" return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        if box is None:
            raise BrowserError(f"nothing visible on the page matches {selector}" + (f" with text {text!r}" if text else ""))
        x, y = box
        self.page("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def type_text(self, text: str) -> None:
        """Text typed into the focused element."""
        self.page("Input.insertText", text=text)

    def press(self, key: str, code: str, key_code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            self.page("Input.dispatchKeyEvent", type=kind, key=key, code=code, windowsVirtualKeyCode=key_code)

    def screenshot(self, path: Path) -> None:
        """A PNG of the page's viewport (written under a temporary name, then renamed)."""
        data = self.page("Page.captureScreenshot", format="png")["data"]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(base64.b64decode(data))
        tmp.replace(path)
