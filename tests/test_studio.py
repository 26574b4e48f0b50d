"""``wis2l studio`` server-side: pages, keyset paging, filters, relations, writes through
the repositories, CSRF, the non-loopback guard and the 1M-row page time (real database)."""

from __future__ import annotations

import re
import socket
import time
import types
from collections.abc import AsyncIterator
from html import unescape
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import httpx
import psycopg
import pytest

from wis2l_core import Wis2l
from wis2l_core.dev.seed import seed
from wis2l_core.errors import ConfigError
from wis2l_core.studio import create_app
from wis2l_core.studio.catalog import load_catalog
from wis2l_core.studio.hosts import host_names
from wis2l_core.studio.queries import COUNT_CAP, count_rows, fetch_page
from wis2l_core.studio.server import StudioServer, guard, is_loopback
from wis2l_core.testing.servers import with_database

BASE = "http://127.0.0.1:5555"
LIBRARY_TABLES = {
    "users",
    "templates",
    "projects",
    "components",
    "design_tokens",
    "builds",
    "deployments",
    "events",
}


@pytest.fixture
async def seeded(wis: Wis2l) -> Wis2l:
    async with wis.transaction() as tx:
        await seed(tx)
    return wis


def _client(wis: Wis2l, *, write: bool = False) -> httpx.AsyncClient:
    app = create_app(wis, write=write)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


@pytest.fixture
async def client(seeded: Wis2l) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(seeded) as c:
        yield c


@pytest.fixture
async def writer(seeded: Wis2l) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(seeded, write=True) as c:
        yield c


def _links(html: str, pattern: str) -> list[str]:
    return [unescape(m) for m in re.findall(rf'href="({pattern}[^"]*)"', html)]


def _next(html: str) -> str | None:
    m = re.search(r'id="next" rel="next" href="([^"]+)"', html)
    return unescape(m.group(1)) if m else None


def _row_ids(html: str, table: str) -> list[str]:
    return [dict(parse_qsl(urlsplit(u).query))["k"] for u in _links(html, f"/t/{table}/row")]


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token in the form"
    return m.group(1)


async def test_index_lists_every_table_with_counts_health_and_backlog(
    client: httpx.AsyncClient, seeded: Wis2l
) -> None:
    await seeded.relay.stop()  # a steady backlog to compare with
    r = await client.get("/")
    assert r.status_code == 200
    for name in LIBRARY_TABLES | {"wis2l_migrations"}:
        assert f'href="/t/{name}"' in r.text
    builds = await seeded.database.fetch_val("SELECT count(*) FROM builds")
    assert re.search(
        rf'href="/t/builds">builds</a></td>\s*<td class="num" title="exact">{builds}<', r.text
    )
    assert 'id="health"' in r.text
    assert "database" in r.text
    backlog = await seeded.relay.backlog()
    assert re.search(rf'id="backlog"><strong>{backlog.size}</strong>', r.text)
    status = (await client.get("/status.json")).json()
    assert status["health"]["checks"]["database"]["healthy"] is True
    assert "size" in status["outbox"]


async def test_index_shows_the_newest_events_first(
    client: httpx.AsyncClient, seeded: Wis2l
) -> None:
    project = await seeded.projects.find_by_slug("starfall")
    assert project is not None
    build = await seeded.builds.create(project_id=project.id, target="web")
    r = await client.get("/")
    assert r.status_code == 200
    newest = r.text.split('id="newest"', 1)[1].split("</section>", 1)[0]
    ids = [
        parse_qsl(urlsplit(u).query)[0][1]  # the key is (id, created_at)
        for u in _links(newest, "/t/events/row")
    ]
    expected = await seeded.database.fetch_all(
        "SELECT id, type, project_id FROM events ORDER BY id DESC LIMIT 12"
    )
    assert ids == [str(e["id"]) for e in expected]
    first = newest.split("</tr>", 2)[1]  # the event of the build just made
    assert f"<td>{expected[0]['type']}</td>" in first
    assert expected[0]["project_id"] == build.project_id
    assert str(project.id)[-8:] in first


async def test_database_unreachable_is_a_503_page_with_the_navigation(
    wis2l_settings: Any, wis2l_database_url: str
) -> None:
    """PostgreSQL refuses the studio's database (a real outage of it: connections ended,
    new ones refused): every page says so in plain words, keeps the navigation, and asks
    the browser to try again."""
    settings = attrs.evolve(wis2l_settings, db_pool_timeout=1.0)
    name = urlsplit(wis2l_database_url).path.lstrip("/")
    async with Wis2l(settings) as wis, _client(wis) as c:
        assert (await c.get("/")).status_code == 200  # the catalog is known
        with psycopg.connect(
            with_database(wis2l_database_url, "postgres"), autocommit=True
        ) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    [name],
                )
                for url in ("/", "/t/builds", "/t/builds?fc=status&fo=eq&fv=failed"):
                    r = await c.get(url)
                    assert r.status_code == 503, url
                    assert "The database is unreachable" in r.text
                    assert 'href="/t/users"' in r.text  # the navigation
                    assert r.headers["retry-after"] == "5"
                    assert '<meta http-equiv="refresh" content="5">' in r.text
                    assert "Traceback" not in r.text
            finally:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


async def test_keyset_pages_cover_the_table_once_in_key_order(
    client: httpx.AsyncClient, seeded: Wis2l
) -> None:
    expected = [
        str(r["id"]) for r in await seeded.database.fetch_all("SELECT id FROM builds ORDER BY id")
    ]
    seen: list[str] = []
    url: str | None = "/t/builds?limit=25"
    while url is not None:
        r = await client.get(url)
        assert r.status_code == 200
        assert "OFFSET" not in url
        seen += _row_ids(r.text, "builds")
        url = _next(r.text)
    assert seen == expected


@pytest.mark.parametrize("desc", [False, True])
async def test_sorting_on_a_nullable_indexed_column_pages_through_nulls(
    client: httpx.AsyncClient, seeded: Wis2l, desc: bool
) -> None:
    """deployments.build_id is indexed and nullable: every row once, in PostgreSQL's order
    (NULLs last going up, first going down)."""
    await seeded.database.execute("UPDATE deployments SET build_id = NULL WHERE version LIKE '%.1'")
    order = "DESC" if desc else "ASC"
    expected = [
        str(r["id"])
        for r in await seeded.database.fetch_all(
            f"SELECT id FROM deployments ORDER BY build_id {order}, id {order}"
        )
    ]
    assert await seeded.database.fetch_val(
        "SELECT count(*) FROM deployments WHERE build_id IS NULL"
    )
    seen: list[str] = []
    url: str | None = f"/t/deployments?sort=build_id&limit=7{'&desc=1' if desc else ''}"
    while url is not None:
        r = await client.get(url)
        assert r.status_code == 200, r.text
        seen += _row_ids(r.text, "deployments")
        url = _next(r.text)
    assert seen == expected


async def test_filters(client: httpx.AsyncClient, seeded: Wis2l) -> None:
    r = await client.get(
        "/t/builds", params={"fc": "status", "fo": "eq", "fv": "failed", "limit": 500}
    )
    failed = await seeded.database.fetch_val("SELECT count(*) FROM builds WHERE status = 'failed'")
    assert failed
    assert len(_row_ids(r.text, "builds")) == failed
    assert "status-completed" not in r.text
    r = await client.get("/t/projects", params=[("fc", "slug"), ("fo", "contains"), ("fv", "STAR")])
    assert "starfall" in r.text
    assert "neon-drift" not in r.text
    r = await client.get("/t/deployments", params={"fc": "url", "fo": "null", "limit": 500})
    nulls = await seeded.database.fetch_val("SELECT count(*) FROM deployments WHERE url IS NULL")
    assert len(_row_ids(r.text, "deployments")) == nulls
    # a LIKE wildcard in a filter value is a literal character
    r = await client.get("/t/projects", params={"fc": "slug", "fo": "contains", "fv": "%"})
    assert _row_ids(r.text, "projects") == []


BAD_REQUESTS = [
    ("/t/builds?fc=progress&fo=eq&fv=abc", 400, "progress = “abc” cannot be applied"),
    ("/t/builds?fc=status&fo=eq&fv=x&fc=id&fo=gt&fv=nope", 400, "“nope” is not a valid uuid"),
    ("/t/builds?fc=progress&fo=lt&fv=99999999999", 400, "“99999999999” is not a valid integer"),
    ('/t/builds?fc=id";drop table builds;--&fo=eq&fv=1', 400, "has no column"),
    ("/t/builds?fc=status&fo=like&fv=x", 400, "unknown filter operator"),
    ("/t/builds?fc=status&fc=target&fo=eq", 400, "triples"),
    ("/t/builds?sort=target", 400, "sorted only on indexed columns"),
    ("/t/builds?after=bm9wZQ", 400, "cursor is not from this table"),
    ("/t/builds?limit=0", 400, "limit"),
    ("/t/builds?limit=x", 400, "limit"),
    ("/t/no_such_table", 404, "no table"),
    ("/t/builds/row?k=00000000-0000-0000-0000-000000000000", 404, "has no row"),
    ("/t/builds/row", 400, "primary key"),
    (
        "/t/builds/row?k=nope",
        400,
        "the key id = “nope” cannot be applied: “nope” is not a valid uuid",
    ),
]


async def test_bad_requests_are_clear_pages(client: httpx.AsyncClient, seeded: Wis2l) -> None:
    for url, status, message in BAD_REQUESTS:
        r = await client.get(url)
        assert r.status_code == status, url
        assert message in unescape(r.text), url
        assert "Traceback" not in r.text
        assert "CONTEXT" not in r.text
        assert "portal" not in r.text
        assert 'href="/t/users"' in r.text, url  # the navigation stays
    assert await seeded.database.fetch_val("SELECT count(*) FROM builds")


async def test_a_cursor_from_another_sort_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.get("/t/builds?limit=5")
    nxt = _next(r.text)
    assert nxt is not None
    after = dict(parse_qsl(urlsplit(nxt).query))["after"]
    r = await client.get("/t/builds", params={"after": after, "sort": "status"})
    assert r.status_code == 400


async def test_project_page_follows_relations_both_ways(
    client: httpx.AsyncClient, seeded: Wis2l
) -> None:
    project = await seeded.projects.find_by_slug("starfall")
    assert project is not None
    r = await client.get("/t/projects/row", params={"k": str(project.id)})
    assert r.status_code == 200
    owner = await seeded.users.find_by_id(project.owner_id)
    assert owner is not None
    assert f'href="/t/users/row?k={owner.id}">{owner.email}<' in r.text or owner.name in r.text
    assert project.template_id is not None
    assert f"/t/templates/row?k={project.template_id}" in r.text
    for table in ("components", "design_tokens", "builds", "deployments", "events"):
        assert f'id="rel-{table}-project_id"' in r.text, table
    builds = await seeded.builds.find_by_project_id(project.id, limit=1)
    assert f"/t/builds/row?k={builds.items[0].id}" in r.text
    assert '<span class="swatch" style="background:#0b1d3a">' in r.text  # color.sky
    assert '<details class="json">' in r.text  # metadata, payloads ...
    assert "<progress" in r.text
    assert re.search(r'<a href="https://[^"]+" target="_blank" rel="noopener noreferrer">', r.text)


async def test_build_page_links_to_its_deployments(
    client: httpx.AsyncClient, seeded: Wis2l
) -> None:
    row = await seeded.database.fetch_one(
        "SELECT build_id, id FROM deployments WHERE build_id IS NOT NULL LIMIT 1"
    )
    assert row is not None
    r = await client.get("/t/builds/row", params={"k": str(row["build_id"])})
    assert 'id="rel-deployments-build_id"' in r.text
    assert f"/t/deployments/row?k={row['id']}" in r.text
    assert "/t/projects/row?k=" in r.text  # and up to its project


async def test_read_only_by_default(client: httpx.AsyncClient, seeded: Wis2l) -> None:
    build = (await seeded.builds.find_all(limit=1)).items[0]
    r = await client.get("/t/builds/row", params={"k": str(build.id)})
    assert 'id="edit"' not in r.text
    assert "read-only" in r.text
    r = await client.post(
        f"/t/builds/row/update?k={build.id}",
        data={"status": "failed", "csrf": "x"},
        headers={"Origin": BASE},
    )
    assert r.status_code == 403
    assert "--write" in r.text
    assert (await seeded.builds.find_by_id(build.id)) == build


async def _build_in(wis: Wis2l, status: str) -> Any:
    row = await wis.database.fetch_one("SELECT id FROM builds WHERE status = %s LIMIT 1", [status])
    assert row is not None
    return await wis.builds.find_by_id(row["id"])


async def test_write_goes_through_the_repository(writer: httpx.AsyncClient, seeded: Wis2l) -> None:
    build = await _build_in(seeded, "pending")
    page = await writer.get("/t/builds/row", params={"k": str(build.id)})
    token = _csrf(page.text)
    events_before = await seeded.database.fetch_val(
        "SELECT count(*) FROM events WHERE type = 'build.started'"
    )
    r = await writer.post(
        f"/t/builds/row/update?k={build.id}",
        data={"csrf": token, "status": "building", "progress": "40", "artifacts": "{}", "log": ""},
        headers={"Origin": BASE},
    )
    assert r.status_code == 303, r.text
    after = await seeded.builds.find_by_id(build.id)
    assert after is not None
    assert after.status == "building"
    assert after.progress == 40
    assert after.started_at is not None  # set by the repository's status machine
    # the repository recorded its event (the audit log is the outbox)
    assert (
        await seeded.database.fetch_val("SELECT count(*) FROM events WHERE type = 'build.started'")
        == events_before + 1
    )
    r = await writer.get(r.headers["location"])
    assert "Updated progress, status" in r.text


async def test_an_illegal_status_move_is_a_clear_message(
    writer: httpx.AsyncClient, seeded: Wis2l
) -> None:
    build = await _build_in(seeded, "completed")
    page = await writer.get("/t/builds/row", params={"k": str(build.id)})
    r = await writer.post(
        f"/t/builds/row/update?k={build.id}",
        data={"csrf": _csrf(page.text), "status": "building"},
        headers={"Origin": BASE},
    )
    assert r.status_code == 409
    assert (
        '<div class="alert error" role="alert" id="failure"><strong>InvalidTransition</strong>'
        in r.text
    )
    assert "completed" in r.text
    assert "Traceback" not in r.text
    assert (await seeded.builds.find_by_id(build.id)) == build


FORGERIES: list[tuple[str | None, dict[str, str]]] = [
    (None, {"Origin": BASE}),
    ("forged", {"Origin": BASE}),
    ("ok", {"Origin": "http://evil.example"}),
    ("ok", {"Origin": "http://rebind.evil.example:5555"}),  # not the request's own URL
    ("ok", {"Origin": "http://127.0.0.1:8080"}),  # another local server's page
    ("ok", {"Origin": "null"}),
    ("ok", {}),
    ("ok", {"Referer": "http://evil.example/t/builds"}),
    ("ok", {"Sec-Fetch-Site": "cross-site"}),
    ("ok", {"Sec-Fetch-Site": "same-site", "Referer": f"{BASE}/t/builds"}),
]


async def test_writes_need_the_csrf_token_and_same_origin(
    writer: httpx.AsyncClient, seeded: Wis2l
) -> None:
    build = await _build_in(seeded, "pending")
    page = await writer.get("/t/builds/row", params={"k": str(build.id)})
    for token, headers in FORGERIES:
        data = {"status": "failed"}
        if token is not None:
            data["csrf"] = _csrf(page.text) if token == "ok" else token
        r = await writer.post(f"/t/builds/row/update?k={build.id}", data=data, headers=headers)
        assert r.status_code == 403, (token, headers)
        assert (await seeded.builds.find_by_id(build.id)) == build
    # the same form with the token, from the studio's own pages, goes through
    data = {"status": "failed", "csrf": _csrf(page.text)}
    r = await writer.post(f"/t/builds/row/update?k={build.id}", data=data, headers={"Origin": BASE})
    assert r.status_code == 303


async def test_writes_from_the_studios_pages_pass_the_one_csrf_rule(
    writer: httpx.AsyncClient, seeded: Wis2l
) -> None:
    build = await _build_in(seeded, "pending")
    page = await writer.get("/t/builds/row", params={"k": str(build.id)})
    for progress, headers in enumerate(
        [
            {"Origin": "http://localhost:5555"},  # another name of the same address
            {"Sec-Fetch-Site": "same-origin"},
            {"Referer": "http://[::1]:5555/t/builds/row"},
        ]
    ):
        data = {"status": "building", "progress": str(progress + 1), "csrf": _csrf(page.text)}
        r = await writer.post(f"/t/builds/row/update?k={build.id}", data=data, headers=headers)
        assert r.status_code == 303, (headers, r.text)
        after = await seeded.builds.find_by_id(build.id)
        assert after is not None
        assert after.progress == progress + 1


async def test_create_and_delete_through_the_repositories(
    writer: httpx.AsyncClient, seeded: Wis2l
) -> None:
    project = await seeded.projects.find_by_slug("starfall")
    assert project is not None
    page = await writer.get("/t/builds/new")
    assert 'name="project_id"' in page.text
    assert 'name="target"' in page.text
    token = _csrf(page.text)
    r = await writer.post(
        "/t/builds/new",
        data={"csrf": token, "project_id": str(project.id), "target": ""},
        headers={"Origin": BASE},
    )
    assert r.status_code == 400
    assert "ValidationError" in r.text
    r = await writer.post(
        "/t/builds/new",
        data={"csrf": token, "project_id": str(project.id), "target": "webgl"},
        headers={"Origin": BASE},
    )
    assert r.status_code == 303
    build_id = dict(parse_qsl(urlsplit(r.headers["location"]).query))["k"]
    made = await seeded.builds.find_by_id(build_id)
    assert made is not None
    assert made.target == "webgl"
    assert made.status == "pending"
    r = await writer.post(
        f"/t/builds/row/delete?k={build_id}", data={"csrf": token}, headers={"Origin": BASE}
    )
    assert r.status_code == 303
    assert await seeded.builds.find_by_id(build_id) is None
    # design tokens are created with tokens.upsert (its TokenUpdated event included)
    r = await writer.post(
        "/t/design_tokens/new",
        data={
            "csrf": token,
            "project_id": str(project.id),
            "name": "color.ember",
            "category": "color",
            "value": '"#ff5a1f"',
            "group": "palette",
        },
        headers={"Origin": BASE},
    )
    assert r.status_code == 303, r.text
    made_token = await seeded.tokens.find_by_category(project.id, "color")
    assert {t.name: t.value for t in made_token}["color.ember"] == "#ff5a1f"
    r = await writer.get(r.headers["location"])
    assert '<span class="swatch" style="background:#ff5a1f">' in r.text
    # a JSON field that is not JSON is refused before the repository is called
    comp = (await seeded.components.find_by_project_id(project.id, limit=1)).items[0]
    r = await writer.post(
        f"/t/components/row/update?k={comp.id}",
        data={"csrf": token, "metadata": "{not json"},
        headers={"Origin": BASE},
    )
    assert r.status_code == 400
    assert "not valid JSON" in r.text
    assert (await seeded.components.find_by_id(comp.id)) == comp


async def test_app_tables_without_a_primary_key_page_by_ctid(wis: Wis2l) -> None:
    await wis.database.execute("CREATE TABLE app_notes (body text, tags jsonb)")
    await wis.database.execute(
        "INSERT INTO app_notes SELECT 'note ' || g, jsonb_build_object('n', g) "
        "FROM generate_series(1, 23) g"
    )
    async with _client(wis) as c:
        seen: list[str] = []
        url: str | None = "/t/app_notes?limit=10"
        while url is not None:
            r = await c.get(url)
            assert r.status_code == 200
            seen += re.findall(r">(note \d+)<", r.text)
            url = _next(r.text)
        assert sorted(seen) == sorted(f"note {i}" for i in range(1, 24))
        r = await c.get("/t/app_notes/row?k=1")
        assert r.status_code == 400


async def test_counts_are_exact_when_small_and_estimated_when_big(wis: Wis2l) -> None:
    await wis.database.execute("CREATE TABLE app_big (id bigint PRIMARY KEY)")
    await wis.database.execute(
        "INSERT INTO app_big SELECT generate_series(1, %s)", [COUNT_CAP + 500]
    )
    await wis.database.execute("ANALYZE app_big")
    catalog = await load_catalog(wis.database)
    n, exact = await count_rows(wis.database, catalog.tables["app_big"])
    assert not exact
    assert abs(n - (COUNT_CAP + 500)) < 200
    n, exact = await count_rows(wis.database, catalog.tables["users"])
    assert exact
    assert n == 0


async def test_a_partitioned_table_is_estimated_from_its_partitions(wis: Wis2l) -> None:
    # events is partitioned by month: PostgreSQL keeps no statistics on the parent
    rows = 2 * COUNT_CAP + 500
    await wis.database.execute(
        "INSERT INTO events (type, subsystem, created_at)"
        " SELECT 'note.added', 'ignis', now() - mod(g, 40) * interval '1 day'"
        " FROM generate_series(1, %s) g",
        [rows],
    )
    # what autovacuum does: it analyzes the partitions, never the partitioned parent
    for part in await wis.database.fetch_all("SELECT name FROM wis2l_events_partitions()"):
        await wis.database.execute(f'ANALYZE "{part["name"]}"')
    catalog = await load_catalog(wis.database)
    n, exact = await count_rows(wis.database, catalog.tables["events"])
    assert not exact
    assert abs(n - rows) < rows // 10


def test_loopback_and_the_non_loopback_guard(wis2l_settings: Any) -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.5")

    class Runtime:
        settings = wis2l_settings

    app = object()
    assert guard(app, Runtime(), "127.0.0.1") is app
    with pytest.raises(ConfigError, match="WIS2L_OIDC_ISSUER"):
        guard(app, Runtime(), "0.0.0.0")


async def test_server_binds_loopback_and_refuses_a_used_port(wis: Wis2l) -> None:
    server = StudioServer(wis, port=0)
    url = await server.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient() as c:
            r = await c.get(url + "t/users")
            assert r.status_code == 200
            assert "default-src 'self'" in r.headers["content-security-policy"]
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        other = StudioServer(wis, port=port)
        with pytest.raises(OSError, match=r"[Aa]ddress"):
            await other.start()
    finally:
        await server.stop()


async def test_a_rebound_name_is_refused_before_any_handler(seeded: Wis2l) -> None:
    """DNS rebinding: a page on rebind.evil.example, its name now pointing at 127.0.0.1,
    reaches the studio with its own name in Host. Pages, static files, the live stream
    and writes are refused (421, the name not echoed); the bound address's names pass."""
    server = StudioServer(seeded, port=0, write=True)
    url = await server.start()
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    forged = f"rebind.evil.example:{port}"
    build = await _build_in(seeded, "pending")
    try:
        async with httpx.AsyncClient(base_url=url) as c:
            token = _csrf((await c.get("/t/builds/row", params={"k": str(build.id)})).text)
            for path in ("/", "/t/users", "/status.json", "/static/studio.js", "/live"):
                r = await c.get(path, headers={"Host": forged})
                assert r.status_code == 421, path
                assert "rebind" not in r.text
                assert r.headers["content-type"].startswith("text/plain")
            for host in (forged, f"localhost:{port + 1}", "127.0.0.1", f"127.0.0.1.:{port}"):
                r = await c.post(
                    f"/t/builds/row/update?k={build.id}",
                    data={"status": "failed", "csrf": token},
                    headers={"Host": host, "Origin": f"http://{host}"},
                )
                assert r.status_code == 421, host
            assert (await seeded.builds.find_by_id(build.id)) == build
            for name in ("127.0.0.1", "localhost", "LOCALHOST", "[::1]"):
                r = await c.get("/t/users", headers={"Host": f"{name}:{port}"})
                assert r.status_code == 200, name
            async with c.stream("GET", "/live", headers={"Host": f"localhost:{port}"}) as live:
                assert live.status_code == 200
                assert live.headers["content-type"].startswith("text/event-stream")
                async for chunk in live.aiter_text():
                    assert chunk.startswith("retry:")
                    break
            r = await c.post(
                f"/t/builds/row/update?k={build.id}",
                data={"status": "failed", "csrf": token},
                headers={"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"},
            )
            assert r.status_code == 303, r.text
    finally:
        await server.stop()


def test_host_names_are_the_bound_address_and_loopback() -> None:
    assert host_names("127.0.0.1", 5555) == {"127.0.0.1:5555", "localhost:5555", "[::1]:5555"}
    assert "[::1]:80" in host_names("::1", 80)
    assert "localhost" in host_names("::1", 80)  # port 80: Host may leave it out
    assert "studio.lan:8080" in host_names("Studio.LAN", 8080)


@pytest.mark.slow
@pytest.mark.timing
async def test_a_page_over_a_million_rows_renders_under_200_ms(wis: Wis2l) -> None:
    await wis.database.execute(
        "CREATE TABLE app_million (id bigint PRIMARY KEY, name text NOT NULL, "
        "kind text NOT NULL, data jsonb NOT NULL)"
    )
    await wis.database.execute("CREATE INDEX app_million_kind_idx ON app_million (kind, id)")
    await wis.database.execute(
        "INSERT INTO app_million SELECT g, 'row ' || g, 'k' || (g % 10), "
        "jsonb_build_object('g', g, 'tags', jsonb_build_array('a', 'b')) "
        "FROM generate_series(1, 1000000) g"
    )
    await wis.database.execute("ANALYZE app_million")
    async with _client(wis) as c:
        urls = [
            "/t/app_million",
            "/t/app_million?sort=kind&desc=1",
            "/t/app_million?fc=kind&fo=eq&fv=k7",
        ]
        deep = await c.get("/t/app_million?limit=500")
        for _ in range(3):  # a cursor deep into the table
            deep = await c.get(_next(deep.text) or "")
        after = dict(parse_qsl(urlsplit(_next(deep.text) or "").query))["after"]
        urls.append(f"/t/app_million?after={after}")  # row 2,001 on: no OFFSET, same cost
        for url in urls:
            await c.get(url)  # warm
            times = []
            for _ in range(5):
                start = time.perf_counter()
                r = await c.get(url)
                times.append((time.perf_counter() - start) * 1000)
                assert r.status_code == 200
            assert "≈ 1,000,000 rows" in r.text or "≈ 1,0" in r.text
            assert min(times) < 200, (url, times)
    page = await fetch_page(wis.database, (await load_catalog(wis.database)).tables["app_million"])
    assert len(page.rows) == 50
    assert page.next_cursor is not None


async def test_outside_loopback_only_admins_get_in(wis2l_settings: Any) -> None:
    """With an issuer set, a non-loopback studio sits behind AuthMiddleware, and the
    principal it sets must be an admin."""
    from wis2l_core import auth  # the auth extra, in [dev]

    settings = attrs.evolve(
        wis2l_settings, oidc_issuer="https://issuer.example", oidc_audience="studio"
    )

    class Runtime:
        pass

    runtime = Runtime()
    runtime.settings = settings  # type: ignore[attr-defined]
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guarded = guard(app, runtime, "0.0.0.0")
    assert isinstance(guarded, auth.AuthMiddleware)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url=BASE) as c:
        r = await c.get("/")  # no credentials
    assert r.status_code == 401
    admin_only = guarded.app  # what runs once AuthMiddleware has set scope["user"]
    for role, status in (("viewer", 403), ("developer", 403), ("admin", 200)):
        principal = types.SimpleNamespace(role=role)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_with_user(admin_only, principal)),
            base_url=BASE,
        ) as c:
            r = await c.get("/t/users")
        assert r.status_code == status, role
    assert seen == ["/t/users"]


def _with_user(app: Any, user: Any) -> Any:
    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        scope["user"] = user
        await app(scope, receive, send)

    return wrapped


async def test_event_rows_are_named_by_their_composite_key(
    client: httpx.AsyncClient, seeded: Wis2l
) -> None:
    r = await client.get("/t/events?limit=3")
    links = _links(r.text, "/t/events/row")
    assert links
    key = parse_qsl(urlsplit(links[0]).query)
    assert [k for k, _ in key] == ["k", "k"]  # (id, created_at): events are partitioned
    r = await client.get(links[0])
    assert r.status_code == 200
    assert key[0][1] in r.text


async def test_values_are_escaped(client: httpx.AsyncClient, seeded: Wis2l) -> None:
    user = (await seeded.database.fetch_one("SELECT id FROM users LIMIT 1")) or {}
    project = await seeded.projects.create(
        owner_id=user["id"],
        name='<img src=x onerror="alert(1)">',
        slug="xss",
        engine="web",
        description="<script>alert(1)</script>" * 10,
        metadata={"html": "</pre><script>alert(2)</script>"},
    )
    await seeded.builds.create(project_id=project.id, target="<b>web</b>")
    for url in (f"/t/projects/row?k={project.id}", "/t/projects", "/t/builds?limit=500"):
        r = await client.get(url)
        assert r.status_code == 200
        assert "<script>alert" not in r.text, url
        assert "<img src=x" not in r.text, url
        assert "<b>web</b>" not in r.text, url
    r = await client.get(f"/t/projects/row?k={project.id}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert "&lt;/pre&gt;&lt;script&gt;alert(2)" in r.text


def test_cli_refuses_a_public_address_and_a_taken_port(
    wis2l_settings: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from wis2l_core.cli import main

    monkeypatch.setenv("DATABASE_URL", wis2l_settings.database_url)
    monkeypatch.setenv("REDIS_URL", wis2l_settings.redis_url)
    monkeypatch.setenv("NATS_URL", wis2l_settings.nats_urls[0])
    monkeypatch.setenv("WIS2L_NAMESPACE", wis2l_settings.namespace)
    monkeypatch.setenv("WIS2L_STREAM", wis2l_settings.stream_name)
    monkeypatch.delenv("WIS2L_OIDC_ISSUER", raising=False)
    assert main(["studio", "--host", "0.0.0.0", "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert "needs authentication" in err
    assert "127.0.0.1" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["studio", "--port", str(port), "--no-browser"]) == 3
    assert "cannot serve the studio" in capsys.readouterr().err
