"""Headless Debian ``chromium`` driven over the DevTools protocol (CDP), for the analytics browser test.

``Chromium`` starts the browser with a fresh profile, no background networking and a DevTools port chosen by
the browser itself (read back from ``DevToolsActivePort``), attaches to its first page and offers the few calls
the test needs: navigate, evaluate, cookies. ``stop()`` ends the process by its PID and removes the profile.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

from telemetry.testing import WaitTimeout, wait_for

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
         "--disable-extensions", "--metrics-recording-only", "--disable-blink-features=AutomationControlled",
         "--disable-features=Translate,MediaRouter",
         "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1")


class CDPError(RuntimeError):
    pass


class Chromium:
    def __init__(self, binary: str, timeout: float = 30.0) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="analytics-chromium-"))
        # stderr goes to a file: chromium logs a lot, and a full pipe would stall it.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - open for the process's lifetime, closed in stop()
        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=self._log)
        self._id = 0
        self.events: list[dict[str, Any]] = []
        try:
            port = self._devtools_port(timeout)
            self.ws = websocket.create_connection(self._page_ws(port, timeout), timeout=timeout,
                                                  suppress_origin=True)
            self.call("Page.enable")
            self.call("Network.enable")
            self.call("Runtime.enable")
            # posthog-js drops events from user agents that look like bots, "HeadlessChrome" included; the
            # test stands for a person's browser, so it presents the same browser's ordinary user agent.
            # (user agent string, client-hint brands and navigator.webdriver are what it looks at).
            version = self.call("Browser.getVersion")
            agent = version["userAgent"].replace("HeadlessChrome", "Chrome")
            major = agent.split("Chrome/")[1].split(".")[0]
            self.call("Network.setUserAgentOverride", userAgent=agent, userAgentMetadata={
                "brands": [{"brand": "Chromium", "version": major}, {"brand": "Not.A/Brand", "version": "99"}],
                "fullVersion": agent.split("Chrome/")[1].split(" ")[0], "platform": "Linux",
                "platformVersion": "", "architecture": "x86", "model": "", "mobile": False})
        except BaseException:
            self.stop()
            raise

    def _devtools_port(self, timeout: float) -> int:
        active = self.profile / "DevToolsActivePort"

        def port() -> int | None:
            if self.proc.poll() is not None:
                self._log.seek(0)
                err = self._log.read().decode(errors="replace")
                raise CDPError(f"chromium exited with {self.proc.returncode}: {err[-2000:]}")
            text = active.read_text().strip() if active.exists() else ""
            return int(text.split()[0]) if text else None

        try:
            return wait_for(port, timeout, what="chromium's DevTools port")
        except WaitTimeout:
            raise CDPError("chromium did not open its DevTools port") from None

    @staticmethod
    def _page_ws(port: int, timeout: float) -> str:
        def page() -> str | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.load(r)
            pages = [t for t in targets if t.get("type") == "page"]
            return str(pages[0]["webSocketDebuggerUrl"]) if pages else None

        try:
            return wait_for(page, timeout, what="a chromium page target")
        except WaitTimeout:
            raise CDPError("chromium has no page target") from None

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        ident = self._id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)

    def wait_event(self, method: str, timeout: float = 15.0) -> dict[str, Any]:
        """The first event ``method`` not yet consumed (events seen while waiting for replies count)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method:
                    return self.events.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError(f"no {method} within {timeout} s")
            self.ws.settimeout(remaining)
            message = json.loads(self.ws.recv())
            if "method" in message:
                self.events.append(message)

    def navigate(self, url: str) -> None:
        self.events.clear()
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise CDPError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def cookies(self) -> list[dict[str, Any]]:
        return list(self.call("Network.getAllCookies")["cookies"])

    def stop(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)
