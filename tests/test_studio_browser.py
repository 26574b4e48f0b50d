"""``wis2l studio`` in a real headless browser (Debian's Chromium driven by Playwright).

One seeded database, one studio server (``--write``) and one browser for the module. Each
test opens its own page. Screenshots go to a temporary folder, or to
``$WIS2L_STUDIO_SCREENSHOTS`` (``docs/img`` refreshes the docs' images).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
import pytest
from playwright import sync_api as playwright_sync
from psycopg import sql

from wis2l_core import Settings, Wis2l
from wis2l_core.dev.seed import seed
from wis2l_core.testing.plugin import drop_stream
from wis2l_core.testing.servers import Servers, TemplateDatabase, with_database

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("WIS2L_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
if not Path(CHROMIUM).exists():  # pragma: no cover - CI installs Debian's chromium
    pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)

T = TypeVar("T")


class StudioThread:
    """The runtime and the studio's server in an event loop of their own (a thread), so
    the tests can drive the browser with Playwright's synchronous API."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""
        self.wis: Wis2l | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="studio", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the fixture
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        from wis2l_core.studio import StudioServer

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with Wis2l(self.settings) as wis:
            async with wis.transaction() as tx:
                await seed(tx)
            server = StudioServer(wis, port=0, write=True)
            self.url = (await server.start()).rstrip("/")
            self.wis = wis
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await server.stop()
        await drop_stream(self.settings)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(120)
        if self._error is not None:
            raise self._error
        assert self.url, "the studio did not start"

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` in the studio's loop (the runtime's pool lives there)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def studio(wis2l_servers: Servers, wis2l_template: TemplateDatabase) -> Iterator[StudioThread]:
    url = wis2l_template.clone()
    tag = os.urandom(5).hex()
    settings = Settings(
        database_url=url,
        redis_url=wis2l_servers.redis_url,
        nats_urls=(wis2l_servers.nats_url,),
        namespace=f"t{tag}",
        stream_name=f"T{tag.upper()}",
        db_pool_min_size=1,
        db_pool_max_size=5,
        db_pool_timeout=2.0,  # the outage test's pages wait this long
    )
    thread = StudioThread(settings)
    try:
        thread.start()
        yield thread
    finally:
        thread.stop()
        wis2l_template.drop(url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("WIS2L_STUDIO_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("studio-shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def page(browser: Any, studio: StudioThread) -> Iterator[Any]:
    context = browser.new_context(base_url=studio.url, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(10_000)
    p = context.new_page()
    yield p
    context.close()


def _expect(locator: Any) -> Any:
    return playwright_sync.expect(locator)


async def _one_build(wis: Wis2l, status: str) -> str:
    row = await wis.database.fetch_one(
        "SELECT b.id FROM builds b JOIN projects p ON p.id = b.project_id "
        "WHERE b.status = %s ORDER BY p.slug = 'starfall' DESC, b.id LIMIT 1",
        [status],
    )
    assert row is not None
    return str(row["id"])


def test_overview_paging_and_filters(page: Any, shots: Path) -> None:
    page.goto("/")
    _expect(page.locator("h1").first).to_have_text("Tables")
    _expect(page.locator("#live-state")).to_have_text("connected")
    page.screenshot(path=shots / "studio-overview.png")

    page.click("text=builds >> nth=1")  # the tables list (the header nav is first)
    _expect(page).to_have_url(re.compile(r"/t/builds$"))
    ids = "#rows tbody tr td:first-child a"
    first_ids = [a.get_attribute("href") for a in page.locator(ids).all()]
    assert len(first_ids) == 50
    page.click("#next")
    _expect(page).to_have_url(re.compile(r"after="))
    second_ids = [a.get_attribute("href") for a in page.locator(ids).all()]
    assert second_ids
    assert not set(first_ids) & set(second_ids)

    page.goto("/t/builds")
    page.select_option("select[name=fc]", "status")
    page.select_option("select[name=fo]", "eq")
    page.fill("input[name=fv]", "failed")
    page.click("button:has-text('Filter')")
    _expect(page.locator(".filter")).to_contain_text("status = “failed”")
    statuses = page.locator("#rows tbody .badge").all_inner_texts()
    assert statuses
    assert set(statuses) == {"failed"}
    page.goto("/t/design_tokens")
    _expect(page.locator(".swatch").first).to_be_visible()
    page.goto("/t/builds?sort=status&desc=1")
    page.screenshot(path=shots / "studio-table.png")


_SIZES = (
    "b => ({scroll: b.scrollWidth, client: b.clientWidth,"
    " bottom: b.getBoundingClientRect().bottom, view: window.innerHeight,"
    " page: document.documentElement.scrollWidth, width: window.innerWidth})"
)


def test_the_builds_table_is_not_cut_off(page: Any) -> None:
    """At 1400 px the builds table fits (its last column is on screen); narrower, it
    scrolls inside its box, whose scroll bar is on screen, not below 50 rows."""
    page.goto("/t/builds")
    box = page.locator(".scroll").first
    last = page.locator("#rows thead th").last
    sizes = box.evaluate(_SIZES)
    assert sizes["scroll"] <= sizes["client"], sizes
    _expect(last).to_be_in_viewport(ratio=0.99)

    page.set_viewport_size({"width": 1000, "height": 800})
    sizes = box.evaluate(_SIZES)
    assert sizes["scroll"] > sizes["client"], sizes  # wider than its box now
    assert sizes["bottom"] <= sizes["view"], sizes  # its horizontal scroll bar is visible
    assert sizes["page"] <= sizes["width"], sizes  # the page itself does not overflow
    box.evaluate("b => { b.scrollLeft = b.scrollWidth; }")
    _expect(last).to_be_in_viewport(ratio=0.99)


def test_a_wrong_filter_value_is_named_with_the_navigation_kept(page: Any, shots: Path) -> None:
    page.goto("/t/builds")
    page.select_option("select[name=fc]", "progress")
    page.select_option("select[name=fo]", "gt")
    page.fill("input[name=fv]", "half")
    page.click("button:has-text('Filter')")
    alert = page.locator(".alert.error")
    _expect(alert).to_contain_text("progress > “half” cannot be applied")
    _expect(alert).to_contain_text("“half” is not a valid integer")
    _expect(alert).not_to_contain_text("CONTEXT")
    _expect(page.locator("nav.tables a.here")).to_have_text("builds")
    _expect(page.locator("nav.tables a[href='/t/users']")).to_be_visible()
    page.screenshot(path=shots / "studio-filter-error.png", clip=_TOP)
    page.click("text=builds, without filters")
    _expect(page).to_have_url(re.compile(r"/t/builds$"))


_TOP = {"x": 0, "y": 0, "width": 1400, "height": 180}


def test_project_to_build_and_its_deployments(page: Any, shots: Path) -> None:
    page.goto("/t/projects?fc=slug&fo=eq&fv=starfall")
    page.locator("#rows tbody tr td:first-child a").first.click()
    _expect(page.locator("h1")).to_have_text("Starfall")
    for section in ("components", "design_tokens", "builds", "deployments", "events"):
        _expect(page.locator(f"#rel-{section}-project_id")).to_be_visible()
    _expect(page.locator(".refs")).to_contain_text("owner_id")
    _expect(page.locator(".refs")).to_contain_text("template_id")
    _expect(page.locator("#rel-design_tokens-project_id .swatch").first).to_be_visible()
    _expect(page.locator("#rel-deployments-project_id a[target=_blank]").first).to_be_visible()
    page.screenshot(path=shots / "studio-project.png")
    page.locator("#rel-design_tokens-project_id").screenshot(path=shots / "studio-tokens.png")

    # follow a deployment's build: a build page lists the deployments made from it
    deployments = page.locator("#rel-deployments-project_id tbody")
    deployments.locator("a[href*='/t/builds/row']").first.click()
    _expect(page).to_have_url(re.compile(r"/t/builds/row\?k="))
    _expect(page.locator("#record progress")).to_be_visible()
    _expect(page.locator("#rel-deployments-build_id tbody tr").first).to_be_visible()
    page.screenshot(path=shots / "studio-build.png")


def test_an_illegal_build_move_is_refused_with_a_message(
    page: Any, studio: StudioThread, shots: Path
) -> None:
    assert studio.wis is not None
    build_id = studio.call(_one_build(studio.wis, "completed"))
    page.goto(f"/t/builds/row?k={build_id}")
    page.select_option("#f-status", "building")
    page.click("#edit button[type=submit]")
    alert = page.locator("#failure")
    _expect(alert).to_contain_text("InvalidTransition")
    _expect(alert).to_contain_text("completed")
    build = studio.call(studio.wis.builds.find_by_id(build_id))
    assert build is not None
    assert build.status == "completed"
    page.screenshot(path=shots / "studio-refused.png")


def test_a_legal_move_appears_in_the_live_panel(
    page: Any, browser: Any, studio: StudioThread, shots: Path
) -> None:
    assert studio.wis is not None
    build_id = studio.call(_one_build(studio.wis, "pending"))
    page.goto("/")
    _expect(page.locator("#live-state")).to_have_text("connected")

    editor = page.context.new_page()
    editor.goto(f"/t/builds/row?k={build_id}")
    editor.select_option("#f-status", "building")
    editor.fill("#f-progress", "35")
    editor.click("#edit button[type=submit]")
    _expect(editor.locator(".alert.ok")).to_contain_text("Updated progress, status")
    editor.close()

    item = page.locator("#live li[data-type='build.started']")
    _expect(item).to_be_visible(timeout=15_000)
    _expect(item).to_contain_text(build_id)
    page.screenshot(path=shots / "studio-live.png")


def test_the_database_out_of_reach_is_said_with_the_navigation(
    page: Any, studio: StudioThread, shots: Path
) -> None:
    """Connections to the studio's database ended and refused (a real outage of it): the
    pages say so at once in plain words, keep the navigation, and come back by themselves
    once the database is back."""
    page.goto("/t/builds")
    name = urlsplit(studio.settings.database_url).path.lstrip("/")
    admin_url = with_database(studio.settings.database_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                [name],
            )
            answer = page.goto("/t/builds")
            assert answer is not None
            assert answer.status == 503
            _expect(page.locator("#unavailable")).to_contain_text("database is unreachable")
            _expect(page.locator("nav.tables a[href='/t/users']")).to_be_visible()
            page.screenshot(path=shots / "studio-unavailable.png", clip=_TOP)
        finally:
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name))
            )
    _expect(page.locator("#rows")).to_be_visible(timeout=15_000)  # the page reloaded itself
