"""What a person sees: a finished 2x2 sweep over two seeds in `mlflow ui`, looked at in headless
Chromium.

A sweep on tiny data fills a private SQLite store; `mlflow ui` is started on it on a free
loopback port, and Playwright drives Debian's Chromium (`/usr/bin/chromium`, never a downloaded
browser; $PIPELINE_CHROMIUM names another, and a missing path shows the skip) through the pages
a person would open: the experiment's runs (the parent run with its eight children nested under
it), the same runs grouped by their `config_key` tag with the UI's own "Group by" (one group per
configuration, its seeds in it), one child run (its `test_accuracy`), its plots, and the parent's
`comparison/` artifacts.
Screenshots of each page go to $PIPELINE_UI_SCREENSHOTS if set (to keep them), else into the
test's temporary folder.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.cli import QUIET, run_main
from tests.helpers.services import mlflow_service, tail
from tests.helpers.stores import sweep_runs

pytestmark = pytest.mark.system

CONFIGS = ("linear-sgd", "linear-adam", "ann-sgd", "ann-adam")
SEEDS = (1, 2)
CHILDREN = tuple(f"{config} epochs=1 seed={seed}" for config in CONFIGS for seed in SEEDS)
SWEEP_NAME = "sweep model=linear,ann optimizer=sgd,adam seed=1,2"
RUN = "ann-adam epochs=1 seed=1"  # the child whose pages are opened
WAIT_MS = 30_000  # every wait on the page
START_TIMEOUT_S = 120  # the UI creates the store's missing tables on first start


def test_sweep_is_visible_in_mlflow_ui(
    chromium: str, tiny_data: list[str], isolated_tracking: str, tmp_path: Path, shots: Path
) -> None:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright

    # A finished 2x2 sweep over two seeds in this test's store.
    code = run_main(
        [
            "-m",
            "model=linear,ann",
            "optimizer=sgd,adam",
            "seed=1,2",
            *tiny_data,
            "trainer.epochs=1",
            *QUIET,
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ]
    )
    assert code == 0

    client = MlflowClient(isolated_tracking)
    experiment = client.get_experiment_by_name("mnist")
    assert experiment is not None, [e.name for e in client.search_experiments()]
    exp_id = experiment.experiment_id
    parent, sweep_children = sweep_runs(isolated_tracking)
    assert parent.info.experiment_id == exp_id
    assert parent.info.run_name.startswith(SWEEP_NAME), parent.info.run_name
    children = {r.info.run_name: r for r in sweep_children}
    assert sorted(children) == sorted(CHILDREN)
    child = children[RUN]
    test_accuracy = child.data.metrics["test_accuracy"]
    # Runs that differ only in seed share a config_key: the groups the UI should show.
    group_sizes = Counter(c.data.tags["config_key"] for c in sweep_children)
    assert sorted(group_sizes.values()) == [len(SEEDS)] * len(CONFIGS), group_sizes

    with (
        mlflow_service(
            "ui", ["--backend-store-uri", isolated_tracking], tmp_path, START_TIMEOUT_S
        ) as (url, log),
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(WAIT_MS)  # actions
            expect.set_options(timeout=WAIT_MS)  # assertions (5 s by default)

            @contextmanager
            def step(what: str, shot: str) -> Iterator[None]:
                """One page: on success its screenshot; on failure a screenshot of what was
                there instead, and a message naming the step."""
                try:
                    yield
                except (AssertionError, PlaywrightError) as e:
                    failed = shots / f"FAILED_{shot}"
                    try:
                        page.screenshot(path=str(failed), full_page=True)
                    except PlaywrightError as shot_error:
                        failed = f"none: {shot_error}"
                    pytest.fail(
                        f"mlflow ui at {url}: {what}: {e}\n(screenshot: {failed}; "
                        f"page URL {page.url})\n--- mlflow ui log:\n{tail(log)}"
                    )
                page.screenshot(path=str(shots / shot), full_page=True)

            # 1. The experiment's runs: the parent run, its eight children nested under it.
            # `make ui` prints this address: workflowType=machine_learning is MLflow 3's
            # "Model training" view, the runs table.
            with step("the experiment's runs table", "experiment.png"):
                page.goto(f"{url}/#/experiments/{exp_id}/runs?workflowType=machine_learning")
                parent_link = page.get_by_role("link", name=parent.info.run_name, exact=True)
                expect(parent_link).to_be_visible()
                close_assistant(page)
                # Nested children are collapsed under an expand button in the parent's name cell.
                parent_row = page.locator(f'.ag-row[row-id="{parent.info.run_id}"]')
                expander = parent_row.locator('[col-id*="Run Name"] button')
                expect(expander).to_be_visible()
                first_child = page.get_by_role("link", name=CHILDREN[0], exact=True)
                if not first_child.is_visible():
                    expander.click()
                # The Dataset column names each run's data by its slice.
                expect(page.get_by_text(re.compile(r"mnist-train\[:160\]")).first).to_be_visible()
                parent_y = parent_link.bounding_box()["y"]
                for name in CHILDREN:
                    link = page.get_by_role("link", name=name, exact=True)
                    expect(link).to_be_visible()
                    assert link.bounding_box()["y"] > parent_y, f"{name} is not under its parent"

            # 2. The same runs grouped by config_key through the table's "Group by" menu: one
            # group per configuration, holding its seeds. The choice is kept in the browser's
            # local storage, not in the URL, so it is made here as a person makes it.
            with step("the runs grouped by the config_key tag", "grouped.png"):
                page.goto(f"{url}/#/experiments/{exp_id}/runs?workflowType=machine_learning")
                expect(
                    page.get_by_role("link", name=parent.info.run_name, exact=True)
                ).to_be_visible()
                close_assistant(page)
                group_by_tag(page, "config_key")
                headers = page.get_by_text(re.compile(r"^Group: "))
                expect(headers).to_have_count(len(group_sizes))
                tops = {}
                for key, size in group_sizes.items():
                    header = page.get_by_text(f"Group: {key}", exact=True)
                    expect(header).to_be_visible()
                    count = page.get_by_role("row").filter(has=header).get_by_role("status")
                    expect(count).to_have_text(str(size))
                    tops[key] = header.bounding_box()["y"]
                # Each run is listed in its own group: the nearest group row above it.
                for name, run in children.items():
                    link = page.get_by_role("link", name=name, exact=True)
                    expect(link).to_be_visible()
                    y = link.bounding_box()["y"]
                    above = [key for key, top in tops.items() if top < y]
                    assert above, f"{name} is above every group"
                    shown_in = max(above, key=tops.get)
                    assert shown_in == run.data.tags["config_key"], f"{name} is in {shown_in}"

            # 3. One child run: test_accuracy and its value, and its parent.
            with step(f"run {RUN}'s overview", "run.png"):
                page.goto(f"{url}/#/experiments/{exp_id}/runs/{child.info.run_id}")
                expect(page.get_by_role("heading", name=RUN)).to_be_visible()
                row = page.get_by_role("row").filter(
                    has=page.get_by_role("link", name="test_accuracy", exact=True)
                )
                expect(row).to_be_visible()
                shown = row.get_by_role("cell").nth(1).inner_text().strip()
                assert float(shown) == pytest.approx(test_accuracy, rel=1e-6), (
                    f"test_accuracy shown as {shown!r}, stored {test_accuracy}"
                )
                parent_ref = page.get_by_role("link", name=parent.info.run_name, exact=True)
                expect(parent_ref).to_be_visible()

            # 4. Its artifacts: plots/learning_curves.png shown as an image.
            with step(f"run {RUN}'s plots/learning_curves.png", "run_artifact.png"):
                page.get_by_role("tab", name="Artifacts").click()
                open_artifact(page, "plots", "learning_curves.png")
                expect_image(page, "plots/learning_curves.png")

            # 5. The parent's comparison: the table (names every configuration) and the curves.
            with step("the sweep's comparison/comparison.md", "parent_comparison_table.png"):
                page.goto(f"{url}/#/experiments/{exp_id}/runs/{parent.info.run_id}")
                page.get_by_role("tab", name="Artifacts").click()
                open_artifact(page, "comparison", "comparison.md")
                for name in CONFIGS:  # rendered as a table, one row per configuration
                    expect(page.get_by_role("cell", name=name, exact=True)).to_be_visible()
            with step("the sweep's comparison/comparison_curves.png", "parent_comparison.png"):
                open_artifact(page, None, "comparison_curves.png")
                expect_image(page, "comparison/comparison_curves.png")
        finally:
            browser.close()


def close_assistant(page) -> None:
    """MLflow 3.17 opens its "MLflow Assistant" side panel on a fresh profile; it only takes
    room in the screenshots."""
    close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.count() and close.first.is_visible():
        close.first.click()


def group_by_tag(page, tag: str) -> None:
    """Group the runs table by a tag through its "Group by" menu. The menu lists tags and params
    by name, so the tag is taken from its "Tags" section; a run without the tag lands in the
    table's "Additional runs"."""
    from playwright.sync_api import expect

    page.get_by_role("button", name="Group by", exact=True).click()
    menu = page.get_by_role("menu")
    menu.get_by_placeholder("Search").fill(tag)  # the list holds every tag and param
    tags = menu.get_by_role("group").filter(has=page.get_by_text("Tags", exact=True))
    item = tags.get_by_role("menuitemcheckbox", name=tag, exact=True)
    expect(item).not_to_be_checked()  # a click on a checked one would ungroup
    item.click()
    expect(page.get_by_role("button", name=f"Group by: {tag}", exact=True)).to_be_visible()


def open_artifact(page, folder: str | None, name: str) -> None:
    """Click through the artifact tree: open the folder (unless open already), then the file."""
    from playwright.sync_api import expect

    def node(artifact: str):
        return page.locator(f'[data-testid="artifact-tree-node"][artifact-name="{artifact}"]')

    if folder is not None:
        expect(node(folder)).to_be_visible()
        if not node(name).is_visible():
            node(folder).click()
    expect(node(name)).to_be_visible()
    node(name).click()


def expect_image(page, artifact_path: str) -> None:
    """The preview shows the artifact as a loaded, non-empty image."""
    from playwright.sync_api import expect

    image = page.get_by_role("img", name=artifact_path, exact=True)
    expect(image).to_be_visible()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )
    width = image.evaluate("img => img.naturalWidth")
    assert width > 100, f"{artifact_path} preview is {width} px wide"
