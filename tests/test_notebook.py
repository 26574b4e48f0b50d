"""wis2l_core.notebook's helpers, and examples/explore.ipynb run top to bottom (real servers)."""

from __future__ import annotations

import base64
import os
import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from wis2l_core import BuildStatus, Engine, ValidationError, Wis2l
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

    with pytest.raises(ValidationError):
        to_record({"id": 1})
    with pytest.raises(ValidationError):
        to_record(project, flatten=-1)


@pytest.mark.slow
def test_explore_notebook_runs_and_draws_the_chart(
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
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    started = time.perf_counter()
    client.execute(env=env)  # raises CellExecutionError on the first failing cell
    assert time.perf_counter() - started < 60

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert errors == []
    text = "".join(
        o.get("text", "") for cell in code for o in cell.outputs if o.output_type == "stream"
    )
    assert "connected to your servers" in text
    assert "projects: 3 created, 0 already there" in text
    assert "builds: 6 created, 0 already there" in text
    assert re.search(r"^\d{2,} events, \d+ published$", text, re.M), text

    # the DataFrames rendered as tables, with the seeded rows
    html = "".join(
        o["data"].get("text/html", "")
        for cell in code
        for o in cell.outputs
        if o.output_type == "execute_result"
    )
    for slug in ("starfall", "neon-runner"):
        assert slug in html
    assert "duration_ms" in html
    assert "build.completed" in html

    chart = next(cell for cell in code if "chart" in cell.metadata.get("tags", []))
    images = [o for o in chart.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1
    png = base64.b64decode(images[0]["data"]["image/png"])
    assert png.startswith(b"\x89PNG")
    assert len(png) > 10_000  # a drawn figure, not a blank
    if out := os.environ.get("WIS2L_NOTEBOOK_OUT"):  # keep the executed notebook to look at
        nbformat.write(nb, out)
