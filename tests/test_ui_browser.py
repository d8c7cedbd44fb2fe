"""The MLflow UI, seen in a real browser, shows a sweep's child runs and their metrics, and plots
the main metric against the training length across them.

Starts `seqbench ui` on a temporary store holding one small real sweep, loads the experiment's
runs table and the compare view of the children in headless Chromium (Debian's `chromium`), checks
the rendered text, drives the compare view's scatter plot as a user does (tests/browser.py: real
clicks over the DevTools protocol), and keeps a screenshot of each page in
$SEQBENCH_TEST_ARTIFACTS (default `.test-artifacts/` at the repository root).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from mlflow.tracking import MlflowClient

from seqbench.harness.config import RunConfig
from seqbench.harness.sweep import Sweep as SweepRunner
from browser import Browser
from processes import free_port, stop_group

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
EXPERIMENT = "induction-heads"
PAGE_WINDOW = (1600, 1000)
COMPARE_WINDOW = (1600, 2800)  # tall enough for the compare view's metrics table to be in the screenshot

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's `chromium` on PATH (.ci/run installs it)"),
]


@dataclass
class Sweep:
    """What the test expects to see: one sweep read back from the store."""

    uri: str
    experiment_id: str
    parent_name: str
    children: dict[str, str]  # run name -> run id
    metric_names: set[str]  # every metric any child logged


def build_sweep(folder: Path) -> str:
    """Record a small real sweep (mamba and transformer at 64 and 128, two children at a time)
    in a new store under `folder` with `seqbench.harness.sweep`; return the tracking URI."""
    uri = f"sqlite:///{folder}/mlflow.db"
    base = RunConfig(task="induction-heads", steps=2, batch_size=2, eval_samples=4,
                     model_kwargs={"d_model": 16, "n_layers": 1}, device="cpu", tracking_uri=uri,
                     checkpoint_dir=str(folder / "ckpt"))
    result = SweepRunner(base, [("mamba", None), ("transformer", None)], [64, 128], jobs=2, progress=False).run()
    assert [c.status for c in result.children] == ["ok"] * 4, [(c.label, c.seq_len, c.message) for c in result.children]
    return uri


def read_sweep(uri: str) -> Sweep:
    """Find the one sweep in the store and its children, independently of how it was recorded."""
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (parent,) = client.search_runs([experiment_id], "tags.`seqbench.sweep` = 'true'")
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return Sweep(uri=uri, experiment_id=experiment_id, parent_name=parent.info.run_name,
                 children={child.info.run_name: child.info.run_id for child in children},
                 metric_names=set().union(*(child.data.metrics for child in children)))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Sweep:
    started = time.monotonic()
    found = read_sweep(build_sweep(tmp_path_factory.mktemp("store")))
    print(f"\nsweep store built in {time.monotonic() - started:.1f}s")
    assert len(found.children) == 4
    assert {"accuracy/64", "loss/64", "accuracy/128", "loss/128", "train_loss"} <= found.metric_names
    return found


@pytest.fixture(scope="module")
def ui(sweep, tmp_path_factory):
    """Base URL of `seqbench ui` serving the sweep's store, once its REST API lists every run."""
    folder = tmp_path_factory.mktemp("ui")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ,
           # `python -m seqbench.harness.cli` from a temporary folder must import this checkout
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           # the defaults (4 web workers, a pool of job consumers) take ~20 s to boot on 2 cores
           # and serve nothing these pages use
           "MLFLOW_WORKERS": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = folder / "ui.log"
    started = time.monotonic()
    with log.open("w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "seqbench.harness.cli", "ui", "--tracking-uri", sweep.uri,
                                 "--port", str(port)], cwd=folder, env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"experiment_ids": [sweep.experiment_id]}).encode())
        runs = None
        deadline = time.monotonic() + 120
        while runs is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                runs = json.loads(urllib.request.urlopen(request, timeout=5).read())["runs"]
            except OSError:
                time.sleep(0.5)
        assert runs is not None, f"the UI never answered; its log:\n{log.read_text()[-3000:]}"
        assert len(runs) == 1 + len(sweep.children)
        print(f"mlflow ui answered in {time.monotonic() - started:.1f}s")
        yield base
    finally:
        stop_group(proc)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """Folder that keeps the screenshots after the test (CI can upload it)."""
    folder = Path(os.environ.get("SEQBENCH_TEST_ARTIFACTS") or REPO / ".test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class _PageText(HTMLParser):
    """Collects the stripped text nodes of a page, leaving out scripts and styles."""

    def __init__(self):
        super().__init__()
        self.texts: set[str] = set()
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        self._hidden += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._hidden -= tag in ("script", "style")

    def handle_data(self, data):
        if not self._hidden and data.strip():
            self.texts.add(data.strip())


def page_texts(html: str) -> set[str]:
    parser = _PageText()
    parser.feed(html)
    return parser.texts


def chromium(url: str, screenshot: Path, window: tuple[int, int], budget_ms: int, timeout_s: float = 60) -> str:
    """Load `url` once in headless Chromium; write a screenshot and return the rendered DOM.

    With --virtual-time-budget Chromium fast-forwards timers but holds virtual time while network
    fetches are pending, so the DOM is dumped once the app's API calls have been answered and
    rendered. Budgets of a second or so make --screenshot hang (Chromium 156), hence the timeout
    and callers starting at 10 s. A fresh profile keeps what the app saves in localStorage (sort,
    expanded rows) out of the next load."""
    screenshot.unlink(missing_ok=True)  # a stale one must not pass for this load's
    with tempfile.TemporaryDirectory(prefix="seqbench-chromium-", ignore_cleanup_errors=True) as profile:
        args = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}",
                f"--virtual-time-budget={budget_ms}", f"--screenshot={screenshot}", "--dump-dom", url]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            dom, errors = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            dom, errors = "", f"chromium ran past {timeout_s}s"
        finally:
            try:  # also helpers it may leave behind
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
    if not dom:
        print(f"chromium gave no DOM; stderr tail:\n{errors[-2000:]}")
    return dom


def render(url: str, screenshot: Path, expected: set[str], window: tuple[int, int], deadline_s: float = 90) -> set[str]:
    """Text nodes of `url` as Chromium renders it, retried with a doubled virtual-time budget until
    every `expected` text is there or `deadline_s` has passed (a loaded machine renders slower)."""
    deadline = time.monotonic() + deadline_s
    budget_ms = 10_000
    while True:
        started = time.monotonic()
        texts = page_texts(chromium(url, screenshot, window, budget_ms))
        missing = sorted(expected - texts)
        print(f"chromium took {time.monotonic() - started:.1f}s (virtual budget {budget_ms} ms) for {url}"
              + (f"; missing {missing}" if missing else ""))
        if not missing or time.monotonic() > deadline:
            print(f"screenshot: {screenshot}")
            return texts
        budget_ms *= 2


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails when the file is not a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def runs_table_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table with the children on their own rows.

    Sorted by start time (the default) the table nests child runs under their parent, collapsed,
    so the children are not in the page; any other sort shows every run flat, hence the sort by
    run name. workflowType opens the 'Model training' layout rather than MLflow 3's GenAI one."""
    query = urlencode({"orderByKey": "tags.`mlflow.runName`", "orderByAsc": "true",
                       "workflowType": "machine_learning"}, quote_via=quote)
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"


def compare_url(base: str, run_ids: list[str], experiment_id: str) -> str:
    """The compare view of `run_ids`, with the query MLflow's own 'Compare' button builds."""
    query = urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id]),
                       "workflowType": "machine_learning"}, quote_via=quote)
    return f"{base}/#/compare-runs?{query}"


def test_experiment_page_lists_the_child_runs(sweep, ui, artifacts):
    screenshot = artifacts / "mlflow-ui-experiment.png"
    expected = {sweep.parent_name, *sweep.children}
    texts = render(runs_table_url(ui, sweep.experiment_id), screenshot, expected, PAGE_WINDOW)
    assert expected <= texts, f"not on the runs table: {sorted(expected - texts)} (see {screenshot})"
    assert png_size(screenshot) == PAGE_WINDOW


def test_compare_view_shows_the_runs_and_their_metrics(sweep, ui, artifacts):
    screenshot = artifacts / "mlflow-ui-compare.png"
    # The metrics table scrolls inside a fixed height and renders only the rows near its view, so
    # ask for what a comparison across lengths needs: the length-free metrics and the per-length ones.
    compared = {"accuracy", "loss", "accuracy/64", "accuracy/128", "loss/64", "loss/128", "train_loss"}
    assert compared <= sweep.metric_names
    expected = {*sweep.children, *compared}
    run_ids = [sweep.children[name] for name in sorted(sweep.children)]  # columns in name order
    texts = render(compare_url(ui, run_ids, sweep.experiment_id), screenshot, expected, COMPARE_WINDOW)
    assert expected <= texts, f"not on the compare view: {sorted(expected - texts)} (see {screenshot})"
    assert png_size(screenshot) == COMPARE_WINDOW


def test_compare_view_plots_the_main_metric_against_seq_len_one_point_per_child(sweep, ui, artifacts):
    """What a sweep is for, in MLflow's own compare view: the Scatter Plot tab, X-axis `seq_len`,
    Y-axis `accuracy` (the task's main metric, logged without the length in its name) chosen with
    clicks, gives one point per child at its training length and its accuracy."""
    screenshot = artifacts / "mlflow-ui-compare-scatter.png"
    client = MlflowClient(sweep.uri)
    expected = {}  # run name -> (seq_len, accuracy) as the store has them
    for name, run_id in sweep.children.items():
        run = client.get_run(run_id)
        expected[name] = (run.data.params["seq_len"], run.data.metrics["accuracy"])
    run_ids = [sweep.children[name] for name in sorted(sweep.children)]
    with Browser(CHROMIUM, COMPARE_WINDOW) as browser:
        browser.goto(compare_url(ui, run_ids, sweep.experiment_id))
        browser.wait_for("Array.from(document.querySelectorAll('[role=tab]'))"
                         ".some(e => e.textContent.trim() === 'Scatter Plot')", timeout_s=120, what="the plot tabs")
        browser.click("[role=tab]", "Scatter Plot")
        for axis, key in (("x", "seq_len"), ("y", "accuracy")):
            browser.wait_for(f"document.querySelector('#{axis}-axis-selector') !== null", what=f"the {axis}-axis selector")
            browser.click(f"#{axis}-axis-selector")
            browser.wait_for("document.querySelector('[role=option]') !== null", what="the axis options")
            browser.click("[role=option]", key)
        # the trace Plotly drew (a WebGL scatter: its points are not DOM nodes), once both axes are set
        plotted = browser.wait_for(
            "(() => { const g = Array.from(document.querySelectorAll('.js-plotly-plot'))"
            ".find(g => g.layout && g.layout.xaxis.title.text === 'seq_len' && g.layout.yaxis.title.text === 'accuracy');"
            " return g && g._fullData.map(t => ({x: t.x, y: t.y, names: t.text.map(s => s.match(/<b>(.*?)<\\/b>/)[1])})); })()",
            what="a scatter of accuracy against seq_len")
        browser.screenshot(screenshot)
    (trace,) = plotted
    points = {name: (x, y) for name, x, y in zip(trace["names"], trace["x"], trace["y"])}
    assert len(trace["x"]) == len(sweep.children), trace
    assert points == expected, f"see {screenshot}"
    assert png_size(screenshot) == COMPARE_WINDOW
