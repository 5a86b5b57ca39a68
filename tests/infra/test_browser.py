"""The local stack through a real browser: the Prefect UI's run form, then the MLflow UI's run pages.

Headless Chromium (Debian's, driven by Playwright) does what a user does: opens the `finetune`
deployment, fills its custom-run form (the tiny-run values pasted as JSON, the rank changed in the
form), starts the run with a click, and later opens the MLflow experiment and the compare view of
two runs. Each page is saved as a screenshot under `tests-output/browser/`.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import REPO_ROOT, LocalStack, set_dotted

pytestmark = [pytest.mark.slow, pytest.mark.server]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = REPO_ROOT / "tests-output" / "browser"
EXPERIMENT = "browser"
TIMEOUT_MS = 60_000  # the machine is slow and shared: a first page load can take 10+ s

# The cells a user sees on one line of a table, right of the cell whose text is `label`. MLflow's
# compare view draws its metric rows as absolutely placed cells of separate grids, not table rows,
# and keeps collapsed sections' text in place: only what the browser would hit at a point counts.
ROW_JS = """(label) => {
  const root = document.querySelector('main') || document.body;  // not the side panels
  const cells = [...root.querySelectorAll('*')].filter((e) =>
    [...e.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim()));
  const seen = (e) => {
    const r = e.getBoundingClientRect();
    const hit = r.width && r.height && document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
    return !!hit && (hit === e || e.contains(hit));
  };
  const head = cells.find((e) => e.textContent.trim() === label && (e.scrollIntoView({block: 'nearest'}), seen(e)));
  if (!head) return null;
  const box = head.getBoundingClientRect(), y = (box.top + box.bottom) / 2;
  return cells
    .map((e) => [e, e.getBoundingClientRect()])
    .filter(([e, r]) => r.left >= box.right && Math.abs((r.top + r.bottom) / 2 - y) < 8 && seen(e))
    .sort((a, b) => a[1].left - b[1].left)
    .map(([e]) => e.textContent.trim());
}"""


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    # Session scope and first in the test signatures: a missing browser fails before the stack starts.
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: run `make setup-browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1600, "height": 1200})
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        with contextlib.suppress(Exception):  # a diagnostic only: never hides the test's own outcome
            _shot(page, f"last-{request.node.name}")  # where the test ended: the first thing to see
        context.close()


def _shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path))
    return path


def _assert_real_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (1600, 1200), (path, width, height)
    # A blank page of this size compresses to a few kB; a rendered one is far larger.
    assert len(data) > 30_000, (path, len(data))


def _field(page: Any, text: str) -> Any:
    """The form property whose label or description is `text` (the labels' `for` ids match no input)."""
    return page.get_by_text(text, exact=True).locator("xpath=ancestor::*[.//input][1]")


def _open_custom_run_form(page: Any, stack: LocalStack) -> None:
    page.goto(f"{stack.prefect_url}/deployments")
    page.get_by_role("link", name="finetune", exact=True).first.click()
    page.wait_for_url(re.compile(r"/deployments/deployment/"))
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("button", name="Custom run").click()
    page.get_by_role("heading", name="Parameters", exact=True).wait_for()


def _parameters_menu(page: Any, choice: str) -> None:
    """The kebab menu next to "Parameters" toggles between the form and a JSON editor."""
    heading = page.get_by_role("heading", name="Parameters", exact=True)
    heading.locator("xpath=..").get_by_role("button").click()
    page.get_by_text(choice, exact=True).click()


def _close_assistant(page: Any) -> None:
    """MLflow's assistant side panel, open by default: closed (when it is there) for wider screenshots."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.is_visible():
        close.click()


def _finetune_run_count(stack: LocalStack) -> int:
    dep = stack.deployment("finetune")
    return int(stack.api("/flow_runs/count", {"flow_runs": {"deployment_id": {"any_": [dep["id"]]}}}))


def _flow_run_named(stack: LocalStack, name: str) -> dict[str, Any]:
    (run,) = stack.api("/flow_runs/filter", {"flow_runs": {"name": {"any_": [name]}}})
    return dict(run)


def _body(response: Any) -> str:
    try:
        return str(response.text())[:500]
    except Exception as exc:  # a diagnostic only
        return f"(body unreadable: {exc})"


def _peft_value(field: Any) -> dict[str, Any]:
    """The peft parameter as the form holds it: the chosen method's object (published as anyOf)."""
    assert isinstance(field, dict) and "__prefect_kind" not in field, field  # not one raw JSON value
    return dict(field)


def test_the_run_form_offers_each_method_with_its_own_fields(
    browser: Any, page: Any, local_stack: LocalStack
) -> None:
    _open_custom_run_form(page, local_stack)
    # peft is a choice of methods: one button per method, the quickstart's LoRA selected with its fields.
    for method in ("lora", "ia3", "loha", "lokr", "adalora", "prompt_tuning", "p_tuning", "prefix_tuning"):
        page.get_by_role("button", name=method, exact=True).wait_for()

    def label(name: str) -> Any:  # a field's label, "(Optional)" appended by the form
        return page.get_by_text(re.compile(rf"^{name}( \(Optional\))?$"))

    label("Lora Alpha").wait_for()
    assert not label("Num Virtual Tokens").is_visible()
    page.get_by_role("button", name="prompt_tuning", exact=True).click()
    label("Num Virtual Tokens").wait_for()
    label("Prompt Tuning Init").scroll_into_view_if_needed()
    assert not label("Lora Alpha").is_visible()
    _assert_real_png(_shot(page, "prefect-method-choice"))


def test_an_invalid_rank_is_rejected_in_the_run_form(
    browser: Any, page: Any, local_stack: LocalStack
) -> None:
    before = _finetune_run_count(local_stack)
    _open_custom_run_form(page, local_stack)
    _parameters_menu(page, "Use JSON input")
    editor = page.locator("textarea")
    params = json.loads(editor.input_value())
    params["params"]["peft"] = {**_peft_value(params["params"]["peft"]), "r": 0}
    editor.fill(json.dumps(params, indent=2))
    page.get_by_role("button", name="Submit").click()

    # The server's message in a toast that goes after ~5 s (the UI shows it twice). peft is a choice of
    # methods, so the server names the method's object and quotes it, the bad rank included.
    error = page.get_by_text(re.compile(r"Validation failed for field 'params\.peft'")).first
    error.wait_for()
    assert "'r': 0" in error.inner_text()
    _assert_real_png(_shot(page, "prefect-invalid-rank"))
    assert page.get_by_role("button", name="Submit").is_visible()  # still on the form
    assert _finetune_run_count(local_stack) == before


def test_a_run_started_in_the_prefect_ui_shows_up_in_the_mlflow_ui(
    browser: Any, page: Any, local_stack: LocalStack, tiny_run: dict[str, Any]
) -> None:
    from mlflow.tracking import MlflowClient

    overrides = {**tiny_run["overrides"], "params.tracking.experiment": EXPERIMENT}
    # Every API call of the UI that failed or was refused: named if the UI only says "Something went wrong".
    failed: list[Any] = []
    page.on("response", lambda r: failed.append(r) if "/api/" in r.url and r.status >= 400 else None)
    page.on("requestfailed", lambda r: failed.append(f"{r.method} {r.url} failed: {r.failure}"))

    # The Prefect UI: the tiny-run values pasted into the JSON editor, the rank and name in the form.
    _open_custom_run_form(page, local_stack)
    _parameters_menu(page, "Use JSON input")
    editor = page.locator("textarea")  # the JSON editor is the form's only textarea
    params = json.loads(editor.input_value())
    # peft is a choice of methods: the form holds the chosen method's fields.
    params["params"]["peft"] = _peft_value(params["params"]["peft"])
    assert (
        params["params"]["peft"]["method"] == "lora" and params["params"]["peft"]["r"] == 8
    )  # the quickstart
    mine = {
        "params.tracking.run_name": "browser-r3",
        "params.output_dir": str(tiny_run["root"] / "out-r3"),
        "params.peft.r": 3,
    }
    for key, value in {**overrides, **mine}.items():
        set_dotted(params, key, value)
    editor.fill(json.dumps(params, indent=2))
    _parameters_menu(page, "Use form input")
    _field(page, "Run Name").get_by_role("textbox").fill("browser-r3")
    _assert_real_png(_shot(page, "prefect-run-form"))
    page.get_by_role("button", name="Submit").click()
    # The UI shows its toasts twice, and with two spaces in "scheduled  to start".
    toast = page.get_by_text(re.compile(r"browser-r3\s+scheduled\s+to\s+start")).first
    try:
        toast.wait_for()
    except Exception as exc:
        calls = [
            r if isinstance(r, str) else f"{r.request.method} {r.url} -> {r.status}: {_body(r)}"
            for r in failed
        ]
        raise AssertionError(f"the run was not created; failed API calls: {calls}") from exc
    # The run to compare with, started through the API once the form is submitted (not while the UI
    # submits: a flow-run process starting up on 2 busy cores starved the server); they train together.
    other = local_stack.trigger(
        "finetune",
        {
            **overrides,
            "params.peft.r": 5,
            "params.tracking.run_name": "browser-r5",
            "params.output_dir": str(tiny_run["root"] / "out-r5"),
        },
    )

    started = _flow_run_named(local_stack, "browser-r3")
    assert started["parameters"]["params"]["peft"]["r"] == 3
    run = local_stack.wait(started["id"])
    assert run["state"]["type"] == "COMPLETED", local_stack.logs(started["id"])
    assert local_stack.wait(other)["state"]["type"] == "COMPLETED", local_stack.logs(other)

    page.goto(f"{local_stack.prefect_url}/flow-runs/flow-run/{started['id']}")
    page.get_by_text("Completed", exact=True).first.wait_for()
    page.get_by_text("Artifacts", exact=True).click()
    page.get_by_text("eval-metrics", exact=True).wait_for()
    assert page.get_by_text("browser-r3", exact=True).first.is_visible()
    _assert_real_png(_shot(page, "prefect-flow-run"))

    # The MLflow UI: the experiment's runs, then two of them compared.
    client = MlflowClient(tracking_uri=local_stack.mlflow_url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    mlruns = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(mlruns) == {"browser-r3", "browser-r5"}
    assert mlruns["browser-r3"].data.params["peft.r"] == "3"

    page.goto(f"{local_stack.mlflow_url}/#/experiments/{experiment.experiment_id}/runs")
    for name in mlruns:
        page.get_by_role("link", name=name, exact=True).wait_for()
    _close_assistant(page)
    _assert_real_png(_shot(page, "mlflow-experiment"))

    page.get_by_role("checkbox", name="Select all runs").check()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_url(re.compile(r"#/compare-runs\?"))
    page.get_by_role("link", name="eval_accuracy", exact=True).wait_for()
    _close_assistant(page)
    page.get_by_text("Visualizations", exact=True).click()  # collapse the plots to show the tables
    page.get_by_text("Parameters", exact=True).click()
    names = page.evaluate(ROW_JS, "Run Name:")
    assert names and sorted(names) == ["browser-r3", "browser-r5"], names
    # Metrics in the first rows of the table (its lower rows scroll inside it): the size differs with r.
    for metric in ("eval_accuracy", "adapter_size_bytes"):
        shown = [float(v) for v in page.evaluate(ROW_JS, metric)]
        expected = [mlruns[n].data.metrics[metric] for n in names]
        assert shown == pytest.approx(expected, abs=1e-3), (metric, shown, expected)
    page.get_by_role("link", name="eval_accuracy", exact=True).scroll_into_view_if_needed()
    _assert_real_png(_shot(page, "mlflow-compare"))
