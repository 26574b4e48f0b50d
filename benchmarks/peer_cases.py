"""The peer: SQLAlchemy 2 async ORM (psycopg 3 driver) doing what the repositories do.

``find_by_id``: a new ``AsyncSession`` per call and ``session.get(User, id)`` (no identity
map carried over). Page of 50: ``select(Component)`` of one project, ``id > after``,
ordered by id, limit 51 (one more, as the library fetches to know if a page follows).
SQLAlchemy is imported only here; without it the case reports itself skipped.
"""

from __future__ import annotations

from benchmarks.env import Env
from benchmarks.harness import Config, Result, measure

__all__ = ["run"]

PAGE = 50


async def _seed_components(env: Env, count: int) -> None:
    existing = await env.wis.components.find_by_project_id(env.project_id, limit=count)
    for i in range(count - len(existing.items)):
        await env.wis.components.create(
            project_id=env.project_id,
            name=f"Comp {i}",
            language="gdscript",
            code="extends Node\n" * 10,
            experts=["physics", "ui"],
            metadata={"model": "m", "tokens": i},
        )


async def peer(env: Env, config: Config) -> list[Result]:
    """find_by_id and a page of 50, library vs SQLAlchemy."""
    try:
        import sqlalchemy
        from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
    except ImportError:
        why = "skipped: sqlalchemy not installed (pip install 'sqlalchemy[asyncio]>=2.0')"
        return [Result("peer: find_by_id", skipped=why), Result("peer: page of 50", skipped=why)]
    from uuid import UUID

    await _seed_components(env, PAGE + 10)
    from benchmarks.peer_orm import ComponentRow, UserRow

    url = env.settings.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_async_engine(url, pool_size=10)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    uid, pid = env.user_id, env.project_id
    first = UUID(int=0)
    page_query = (
        sqlalchemy.select(ComponentRow)
        .where(ComponentRow.project_id == pid, ComponentRow.id > first)
        .order_by(ComponentRow.id)
        .limit(PAGE + 1)
    )
    try:

        async def lib_find() -> object:
            return await env.wis.users.find_by_id(uid)

        async def orm_find() -> object:
            async with sessions() as s:
                return await s.get(UserRow, uid)

        async def lib_page() -> object:
            page = await env.wis.components.find_by_project_id(pid, limit=PAGE)
            assert len(page.items) == PAGE
            return page

        async def orm_page() -> object:
            async with sessions() as s:
                rows = (await s.scalars(page_query)).all()
            assert len(rows) == PAGE + 1
            return rows

        find = Result("peer: find_by_id")
        find.ops = await measure(
            {"library": lib_find, "sqlalchemy": orm_find}, iterations=config.n(200), config=config
        )
        find.ratio("library / sqlalchemy", "library", "sqlalchemy")
        page = Result("peer: page of 50")
        page.ops = await measure(
            {"library": lib_page, "sqlalchemy": orm_page}, iterations=config.n(60), config=config
        )
        page.ratio("library / sqlalchemy", "library", "sqlalchemy")
    finally:
        await engine.dispose()
    version = sqlalchemy.__version__
    find.notes = f"SQLAlchemy {version} async ORM, psycopg 3 driver, new session per call"
    page.notes = f"SQLAlchemy {version}; components of one project, keyset, 51 rows fetched"
    return [find, page]


async def run(env: Env, config: Config) -> list[Result]:
    """The peer cases."""
    return await peer(env, config)
