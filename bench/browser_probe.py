"""One more annotator, in a real browser, beside a simulated crowd: what a person waits for.

A thread drives Debian's Chromium (headless, through Playwright) on the annotation page: it logs
in, and for each task reads for a log-normal time around `think_s`, rates every summary, picks the
best and clicks Submit. Its reading time is its own (a few seconds, for enough samples in a short
run): what it waits for depends on the crowd's load, not on its own pace. The time measured is the
one an annotator sees, by the page's own clock: from the click on Submit until the animation frame
in which the next task's title is on the page (the page's request, Gradio's queue, the domain and
the re-render together; not the driver's own overhead in delivering the click).

Used by `bench/crowd_load.py --browser`.
"""
from __future__ import annotations

import math
import random
import threading
import time
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TITLE = "#title textarea, #title input"
THINK_SIGMA = 0.5  # as the crowd's (bench/locustfile.py)
# Installed in the page before its scripts run: each click on Submit starts a clock that stops at
# the first animation frame showing a different title; each wait, with the part of it spent in
# the page's HTTP request (Resource Timing), collects in window.__waits.
TIMER = """
window.__waits = [];
document.addEventListener('click', e => {
  if (!e.target.closest || !e.target.closest('#submit-btn')) return;
  const title = () => document.querySelector('#title textarea, #title input');
  const start = performance.now(), before = title()?.value;
  const frame = () => {
    const now = title()?.value;
    if (!now || now === before) { requestAnimationFrame(frame); return; }
    const calls = performance.getEntriesByType('resource').filter(r => r.startTime >= start);
    window.__waits.push({total: performance.now() - start, request: calls.length ? calls.at(-1).duration : null});
    performance.clearResourceTimings();
  };
  requestAnimationFrame(frame);
}, true);
"""
# Resolves once the title field holds a value other than `prev`: the next task has been drawn.
NEW_TITLE = ("prev => { const t = document.querySelector('#title textarea, #title input');"
             " return t && t.value && t.value !== prev; }")


class BrowserProbe:
    """Runs in its own thread between `with` and the end of the block; `result()` afterwards."""

    def __init__(self, url: str, name: str, password: str, think_s: float, warm_up_s: float = 0) -> None:
        """Waits that start in the first `warm_up_s` seconds (while the crowd logs in) are not counted."""
        self.url, self.name, self.password = url, name, password
        self.mu = math.log(max(think_s, 0.01))
        self.rng = random.Random(name)
        self.count_from = time.monotonic() + warm_up_s
        self.waits: list[dict[str, float | None]] = []
        self._seen = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BrowserProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                page.add_init_script(TIMER)
                page.goto(self.url)
                page.locator("input[type=text]").fill(self.name)
                page.locator("input[type=password]").fill(self.password)
                page.keyboard.press("Enter")
                page.wait_for_function(NEW_TITLE, arg=None, timeout=60_000)
                while not self._stop.is_set():
                    self._judge(page)
                browser.close()
        except Exception as e:  # noqa: BLE001 - reported with the results, the crowd's run goes on
            if not self._stop.is_set():
                self.error = f"{type(e).__name__}: {e}"[:500]

    def _judge(self, page: Any) -> None:
        title = page.locator(TITLE).first.input_value()
        shown = [c for c in "ABCD" if page.locator(f"#summary-{c} textarea").is_visible()]
        if self._stop.wait(self.rng.lognormvariate(self.mu, THINK_SIGMA)):
            return
        for c in shown:
            page.locator(f"#quality-{c} label").nth(self.rng.randrange(7)).click()
            page.locator(f"#factual-{c} label").nth(self.rng.randrange(2)).click()
        page.locator("#best label").nth(self.rng.randrange(len(shown))).click()
        page.locator("#strength label").nth(self.rng.randrange(4)).click()
        counted = time.monotonic() >= self.count_from
        page.locator("#submit-btn").click()
        page.wait_for_function(NEW_TITLE, arg=title, timeout=60_000)
        self._seen += 1
        page.wait_for_function("n => window.__waits.length >= n", arg=self._seen)
        if counted:
            self.waits.append(page.evaluate("() => window.__waits.at(-1)"))

    def result(self) -> dict[str, Any]:
        """Percentiles of the whole wait and of the request inside it (the rest is the page's own
        work: gathering the form before the request, drawing the next task after it)."""

        def pct(key: str, q: float) -> float | None:
            values = sorted(v for w in self.waits if (v := w[key]) is not None)
            return round(values[min(len(values) - 1, int(q * len(values)))]) if values else None

        return {"judgements": len(self.waits), "p50_ms": pct("total", 0.50), "p95_ms": pct("total", 0.95),
                "max_ms": pct("total", 1.0), "request_p50_ms": pct("request", 0.50),
                "request_p95_ms": pct("request", 0.95), "error": self.error}
