"""The report and the summaries viewer in a real browser: headless Chromium at 1400 px.

Chromium is driven over its DevTools protocol with ``websockets`` (already in the lock): no
browser download and no driver whose version must match the system's Chromium. The browser
is the system's (``make test`` installs the Debian package ``chromium`` where it can, or set
PRUNESCOPE_CHROMIUM); without one the tests are skipped, and fail when ``CI`` is set.
Screenshots are kept under tests/artifacts/browser/ (the test prints the folder).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from analysis.report import write_report
from tests.test_analysis import make_run
from tests.test_report import HOSTILE, write_facts_study

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "browser"
WIDTH, HEIGHT = 1400, 900


def chromium_path() -> str | None:
    named = os.environ.get("PRUNESCOPE_CHROMIUM")
    if named:
        return named
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


class Page:
    """One browser tab over the DevTools protocol: navigate, evaluate, screenshot, and the
    console errors and uncaught exceptions seen so far."""

    def __init__(self, socket, session: str):
        self.socket, self.session, self.errors = socket, session, []
        self._ids = itertools.count(1)
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, wait_event: str | None = None, **params) -> dict:
        ident = next(self._ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params, "sessionId": self.session}))
        result, event = None, wait_event is None
        while result is None or not event:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result = message["result"]
            self._note(message)
            event = event or message.get("method") == wait_event
        return result

    def _note(self, message: dict) -> None:
        kind, params = message.get("method"), message.get("params", {})
        if kind == "Runtime.exceptionThrown":
            self.errors.append(params["exceptionDetails"].get("text", "exception"))
        elif kind == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif kind == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(params["entry"]["text"])

    def open(self, path: Path) -> None:
        self.call("Page.navigate", wait_event="Page.loadEventFired", url=path.resolve().as_uri())

    def js(self, expression: str):
        found = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in found:
            raise RuntimeError(f"{expression}: {found['exceptionDetails']}")
        return found["result"].get("value")

    def screenshot(self, path: Path, full: bool = False) -> Path:
        size = self.js("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        clip = {"x": 0, "y": 0, "width": WIDTH, "height": size[1] if full else HEIGHT, "scale": 1}
        shot = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=full)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@contextmanager
def chromium(binary: str, profile: Path):
    """A headless Chromium; yields the DevTools websocket of the browser."""
    from websockets.sync.client import connect

    proc = subprocess.Popen([binary, "--headless=new", "--no-sandbox", "--disable-gpu",
                             "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stderr:
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "Chromium did not start its DevTools endpoint"
        with connect(url, max_size=None) as socket:
            yield socket
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = chromium_path()
    if binary is None:
        message = "no Chromium found (install the 'chromium' package or set PRUNESCOPE_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(f"CI: {message}")
        pytest.skip(message)
    with chromium(binary, tmp_path_factory.mktemp("chromium-profile")) as socket:
        yield socket


def new_page(socket) -> Page:
    ids = itertools.count(10_000)

    def call(method, **params):
        ident = next(ids)
        socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(socket.recv(timeout=60))
            if message.get("id") == ident:
                return message["result"]

    target = call("Target.createTarget", url="about:blank")["targetId"]
    return Page(socket, call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run of the facts task (real source documents and gold facts) whose summaries include
    hostile text."""
    root = tmp_path_factory.mktemp("browser-run")
    write_facts_study(root)
    make_run(root, tasks=("facts",), n_docs=8, texts=lambda i: HOSTILE[i % len(HOSTILE)])
    write_report(root, n_boot=200, seed=1)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {ARTIFACTS}")
    return root


def test_report_first_screen_in_chromium(browser, run):
    page = new_page(browser)
    page.open(run / "report" / "report.html")
    assert page.js("document.documentElement.scrollWidth") <= WIDTH  # no horizontal page overflow
    assert page.js("document.querySelectorAll('#headlines li').length") >= 1
    assert page.js("document.querySelector('h1').textContent") == "prunescope report: browser study"
    toc = page.js("[...document.querySelectorAll('nav.toc a')].map(a => a.textContent)")
    assert "Hallucination risk ratios" in toc and "Provenance" in toc
    # the headlines and the run box are on the first screen
    assert page.js("document.getElementById('headlines').getBoundingClientRect().top") < HEIGHT
    assert page.js("document.querySelector('#key-figure img').naturalWidth") > 0
    page.screenshot(ARTIFACTS / "report-first-screen.png")
    page.screenshot(ARTIFACTS / "report-full.png", full=True)
    assert page.errors == []


def test_viewer_shows_a_chosen_document(browser, run):
    page = new_page(browser)
    page.open(run / "report" / "summaries.html")
    chosen = page.js("document.getElementById('doc').options[2].value")
    page.js(f"const s = document.getElementById('doc'); s.value = {json.dumps(chosen)}; "
            "s.dispatchEvent(new Event('change'))")
    assert page.js("document.getElementById('panes').dataset.doc") == chosen
    titles = page.js("[...document.querySelectorAll('#panes .card h3')].map(h => h.textContent)")
    assert titles[:3] == [f"Source {chosen}", "Reference", "tiny/dense (dense)"]
    assert len(titles) == 2 + 4  # source, reference, dense and three pruned systems
    texts = page.js("[...document.querySelectorAll('#panes .summary p')].map(p => p.textContent)")
    index = int(chosen.rsplit("-", 1)[1])
    assert set(texts) == {HOSTILE[index % len(HOSTILE)]}  # the hostile text shown as text
    assert page.js("document.querySelectorAll('#panes script, #panes img, #panes table').length") == 0
    assert page.js("window.__pwned === undefined")
    assert page.js("document.querySelectorAll('#panes .novel').length") > 0
    assert page.js("document.documentElement.scrollWidth") <= WIDTH
    page.js("const o = document.getElementById('order'); o.value = 'rise'; o.dispatchEvent(new Event('change'))")
    page.screenshot(ARTIFACTS / "viewer.png")
    assert page.errors == []
