"""wis2l_core.notebook's helpers, and examples/explore.ipynb run top to bottom (real servers)."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from tests.helpers import field_is

from wis2l_core import BuildStatus, Engine, ValidationError, Wis2l
from wis2l_core.dev.seed import HISTORY_DAYS, PROJECTS
from wis2l_core.events import BuildProgress
from wis2l_core.notebook import all_pages, to_record, to_records
from wis2l_core.testing.servers import Servers

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "explore.ipynb"


async def test_all_pages_follows_every_cursor_with_filters(wis: Wis2l) -> None:
    user = await wis.users.create(email="nb@example.com", name="Nb", subject="nocturna|nb")
    project = await wis.projects.create(
        owner_id=user.id, name="Nb", slug="nb-project", engine=Engine.LOVE2D
    )
    builds = [await wis.builds.create(project_id=project.id, target=f"t{i}") for i in range(7)]
    await wis.builds.update(builds[3].id, status=BuildStatus.BUILDING)

    every = await all_pages(wis.builds.find_all, limit=2)  # 4 pages
    assert [b.id for b in every] == [b.id for b in builds]
    pending = await all_pages(wis.builds.find_all, status="pending", limit=2)
    assert [b.target for b in pending] == ["t0", "t1", "t2", "t4", "t5", "t6"]
    by_project = await all_pages(wis.builds.find_by_project_id, project.id, limit=3)
    assert len(by_project) == 7
    assert await all_pages(wis.deployments.find_all) == []
    with pytest.raises(ValidationError) as info:
        await all_pages(wis.builds.find_all, after="x")
    assert info.value.field == "after"


async def test_to_records_gives_flat_plain_rows(wis: Wis2l) -> None:
    user = await wis.users.create(email="rec@example.com", name="Rec", subject="nocturna|rec")
    project = await wis.projects.create(
        owner_id=user.id,
        name="Rec",
        slug="rec-project",
        engine=Engine.PICO8,
        metadata={"genre": "puzzle", "ratings": {"fun": 5}},
    )
    row = to_record(project)
    assert row["id"] == str(project.id)
    assert row["engine"] == "pico8"
    assert type(row["engine"]) is str  # the value, not the enum member
    assert row["metadata.genre"] == "puzzle"
    assert row["metadata.ratings"] == {"fun": 5}  # one level spread by default
    assert "metadata" not in row
    assert isinstance(row["created_at"], datetime)
    assert to_record(project, flatten=0)["metadata"] == {"genre": "puzzle", "ratings": {"fun": 5}}
    assert to_record(project, flatten=2)["metadata.ratings.fun"] == 5

    empty = to_record(await wis.builds.create(project_id=project.id, target="web"))
    assert empty["artifacts"] == {}  # an empty mapping stays a column
    assert empty["status"] == "pending"
    assert empty["started_at"] is None

    event = BuildProgress(project_id=project.id, build_id=project.id, progress=40)
    (record,) = to_records([event])
    assert record["progress"] == 40
    assert record["build_id"] == str(project.id)
    assert len(to_records(await wis.projects.find_all())) == 1  # a Page works too

    with pytest.raises(ValidationError, check=field_is("model")):
        to_record({"id": 1})
    with pytest.raises(ValidationError, check=field_is("flatten")):
        to_record(project, flatten=-1)


# Appended to the notebook by the test: what the charts were drawn from, and drew.
PROBE = """
import json
print("PROBE " + json.dumps({
    "groups": {f"{e}/{s}": int(n) for (e, s), n in summary["n"].items()},
    "medians": {
        e: float(m) for e, m in summary.xs("completed", level="status")["median"].items()
    },
    "min_duration_s": float(finished["duration_s"].min()),
    "build_days": int(days),
    "deployment_days": int(deployments["day"].nunique()),
    "deployments": {
        f"{env}/{status}": int(n)
        for (env, status), n in per_day.groupby(level="environment").sum().stack().items()
    },
    "engine_labels": [t.get_text() for t in fig_builds.axes[0].get_yticklabels()],
    "counts_drawn": [t.get_text() for t in fig_builds.axes[0].texts],
    "first_day": str(all_days[0].date()),
    "day_labels": [t.get_text() for t in fig_deployments.axes[-1].get_xticklabels()],
    "titles": [ax.get_title(loc="left") for ax in fig_deployments.axes],
}))
"""


@pytest.mark.slow
def test_explore_notebook_charts_durations_and_deployments_per_day(
    wis2l_servers: Servers, wis2l_database_url: str
) -> None:
    import nbclient  # the notebook extra, part of dev
    import nbformat

    namespace = "nb" + os.urandom(4).hex()
    env = {
        **os.environ,
        "DATABASE_URL": wis2l_database_url,
        "REDIS_URL": wis2l_servers.redis_url,
        "NATS_URL": wis2l_servers.nats_url,
        "WIS2L_NAMESPACE": namespace,
        "WIS2L_STREAM": namespace.upper(),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    nb = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))  # type: ignore[no-untyped-call]
    client = nbclient.NotebookClient(
        nb,
        timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    started = time.perf_counter()
    client.execute(env=env)  # raises CellExecutionError on the first failing cell
    assert time.perf_counter() - started < 60
    if out := os.environ.get("WIS2L_NOTEBOOK_OUT"):  # keep the executed notebook to look at
        nbformat.write(nb, out)  # type: ignore[no-untyped-call]

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    outputs = [o for cell in code for o in cell.outputs]
    assert [o for o in outputs if o.output_type == "error"] == []
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert stderr == []  # no warnings (a deprecated matplotlib call, a pandas one)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "connected to your servers" in text
    assert f"projects: {len(PROJECTS)} created, 0 already there" in text
    built = re.search(r"^builds: (\d+) created, 0 already there$", text, re.M)
    assert built, text
    assert int(built[1]) >= 100
    assert re.search(r"^\d{3,} events, \d+ published$", text, re.M), text

    # the DataFrames rendered as tables, with the seeded rows
    html = "".join(
        o["data"].get("text/html", "")
        for o in outputs
        if o.output_type in ("execute_result", "display_data")
    )
    for slug in ("starfall", "neon-runner"):
        assert slug in html
    assert "duration_s" in html
    assert "build.completed" in html

    probe = json.loads(text.split("PROBE ", 1)[1])
    groups: dict[str, int] = probe["groups"]
    engines = {group.split("/")[0] for group in groups}
    assert len(engines) >= 5
    assert all(groups[f"{engine}/completed"] > 0 for engine in engines)
    assert sum(n for group, n in groups.items() if group.endswith("/failed")) > 0
    assert sum(group.endswith("/failed") for group in groups) >= 3
    assert probe["min_duration_s"] > 0  # no build of zero time
    medians = probe["medians"]
    assert medians["pico8"] < 60 < 5 * 60 < medians["unity"] < medians["unreal"]
    assert probe["build_days"] >= HISTORY_DAYS
    # the builds chart: one row per engine, fastest first, n drawn for every group
    assert probe["engine_labels"] == sorted(medians, key=medians.__getitem__)
    assert sorted(probe["counts_drawn"]) == sorted(
        f"n={groups.get(f'{engine}/{status}', 0)}"
        for engine in engines
        for status in ("completed", "failed")
    )

    deployments: dict[str, int] = probe["deployments"]
    staging = sum(n for key, n in deployments.items() if key.startswith("staging/"))
    production = sum(n for key, n in deployments.items() if key.startswith("production/"))
    assert staging > production > 0
    assert deployments["staging/completed"] > deployments.get("staging/failed", 0) > 0
    assert deployments.get("production/failed", 0) + deployments["staging/failed"] > 1
    assert probe["deployment_days"] >= HISTORY_DAYS
    # the deployments chart: one label per day, none twice, every day in between
    labels = probe["day_labels"]
    assert len(labels) == len(set(labels)) == probe["deployment_days"]
    first = date.fromisoformat(probe["first_day"])
    days = [first + timedelta(days=n) for n in range(len(labels))]
    expected = [day.strftime("%a %d %b") for day in days]
    if days[-1] == datetime.now(UTC).date():
        expected[-1] = "today"
    assert labels == expected
    assert probe["titles"] == [
        f"staging: {staging} deployments, {deployments.get('staging/failed', 0)} failed",
        f"production: {production} deployments, {deployments.get('production/failed', 0)} failed",
    ]

    frames = re.search(r"^frames: ([\d,]+) rows, \d+ MB in", text, re.M)
    assert frames, text
    assert int(frames[1].replace(",", "")) >= 1_000_000
    for tag in ("chart-builds", "chart-deployments", "chart-frames"):
        chart = next(cell for cell in code if tag in cell.metadata.get("tags", []))
        images = [o for o in chart.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, tag
        png = base64.b64decode(images[0]["data"]["image/png"])
        assert png.startswith(b"\x89PNG")
        assert len(png) > 10_000  # a drawn figure, not a blank
