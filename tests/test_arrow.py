"""to_arrow: binary COPY into Arrow with exact types, in batches, on the pool, in a
transaction, from typed queries and repositories; and ``wis2l export --parquet``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.helpers import field_is
from tests.strategies import optional_texts

from wis2l_core import ConfigError, Engine, SchemaMissing, ValidationError, Wis2l, Wis2lError
from wis2l_core.cli import main
from wis2l_core.db import typed

TABLE = """
CREATE TYPE mood AS ENUM ('calm', 'tense', 'épique');
CREATE TABLE kinds (
    k int PRIMARY KEY,
    b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
    n12 numeric(12, 4), n38 numeric(38, 10), n5 numeric(5, 5), n numeric,
    t text, vc varchar(20), bp char(3), nm name, by bytea, u uuid,
    d date, tm time, ts timestamp, tz timestamptz, js json, jb jsonb, m mood
)
"""

ROWS: list[dict[str, Any]] = [
    {
        "k": 1, "b": True, "i2": -32768, "i4": 2147483647, "i8": -9223372036854775808,
        "f4": 1.5, "f8": -0.25, "n12": Decimal("-12345678.9012"),
        "n38": Decimal("9999999999999999999999999999.9999999999"), "n5": Decimal("0.00001"),
        "n": Decimal("-123456789012345678901234567890.000000000000000000000000000001"),
        "t": "unicode: 日本語 🎉 ü", "vc": "", "bp": "ab", "nm": "pg_name",
        "by": b"\x00\x01\xff", "u": uuid.UUID("0192b7a4-0000-7000-8000-00000000abcd"),
        "d": date(1, 1, 1), "tm": time(23, 59, 59, 999999),
        "ts": datetime(1969, 7, 20, 20, 17, 40, 5),
        "tz": datetime(2024, 3, 10, 2, 30, tzinfo=timezone(timedelta(hours=-8))),
        "js": {"a": [1, "x"]}, "jb": {"nested": {"ok": True}, "n": 1.5}, "m": "épique",
    },
    {
        "k": 2, "b": False, "i2": 32767, "i4": -2147483648, "i8": 9223372036854775807,
        "f4": float("inf"), "f8": 1e308, "n12": Decimal("99999999.9999"),
        "n38": Decimal("-0.0000000001"), "n5": Decimal("-0.99999"), "n": Decimal("1E+30"),
        "t": "x" * 10_000, "vc": "twenty chars exactly", "bp": "abc", "nm": "n",
        "by": b"", "u": uuid.UUID(int=0), "d": date(2999, 12, 31), "tm": time(0, 0),
        "ts": datetime(2000, 1, 1), "tz": datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
        "js": [], "jb": "just a string", "m": "calm",
    },
    {"k": 3},  # every other column NULL
    {
        "k": 4, "b": None, "i2": 0, "i4": 0, "i8": 0, "f4": -0.0, "f8": 0.0,
        "n12": Decimal("0.0000"), "n38": Decimal(0), "n5": Decimal("0.00000"),
        "n": Decimal("0.5"), "t": "", "vc": None, "bp": None, "nm": None, "by": None,
        "u": uuid.UUID("ffffffff-ffff-ffff-ffff-ffffffffffff"), "d": date(2000, 1, 1),
        "tm": None, "ts": None, "tz": datetime(2000, 1, 1, tzinfo=UTC), "js": None,
        "jb": {"k": None}, "m": None,
    },
]  # fmt: skip

COLUMNS = [c for c in ROWS[0] if c != "k"]
UNREACHABLE = "postgresql://u@127.0.0.1:1/x"


async def _kinds(wis: Wis2l) -> None:
    await wis.database.execute(TABLE)
    names = ", ".join(ROWS[0])
    values = ", ".join(f"%({c})s" for c in ROWS[0])
    for row in ROWS:
        full = {c: row.get(c) for c in ROWS[0]}
        full["js"] = None if full["js"] is None else json.dumps(full["js"])
        full["jb"] = None if full["jb"] is None else json.dumps(full["jb"])
        await wis.database.execute(f"INSERT INTO kinds ({names}) VALUES ({values})", full)


async def test_every_type_round_trips_exact_values(wis: Wis2l) -> None:
    await _kinds(wis)
    table = await wis.database.to_arrow("SELECT * FROM kinds ORDER BY k")
    expected_types = {
        "b": pa.bool_(),
        "i2": pa.int16(),
        "i4": pa.int32(),
        "i8": pa.int64(),
        "f4": pa.float32(),
        "f8": pa.float64(),
        "n12": pa.decimal128(12, 4),
        "n38": pa.decimal128(38, 10),
        "n5": pa.decimal128(5, 5),
        "n": pa.string(),
        "t": pa.string(),
        "vc": pa.string(),
        "bp": pa.string(),
        "nm": pa.string(),
        "by": pa.binary(),
        "u": pa.uuid(),
        "d": pa.date32(),
        "tm": pa.time64("us"),
        "ts": pa.timestamp("us"),
        "tz": pa.timestamp("us", tz="UTC"),
        "js": pa.string(),
        "jb": pa.string(),
        "m": pa.dictionary(pa.int32(), pa.string()),
    }
    assert {f.name: f.type for f in table.schema if f.name != "k"} == expected_types
    # psycopg's own decoding of the same rows is the oracle
    oracle = await wis.database.fetch_all("SELECT * FROM kinds ORDER BY k")
    got = table.to_pylist()
    assert len(got) == len(ROWS) == len(oracle)
    for mine, theirs, written in zip(got, oracle, ROWS, strict=True):
        for column in COLUMNS:
            value, want = mine[column], theirs[column]
            if column == "n" and want is not None:
                assert Decimal(value) == want, column
                assert value == str(want), column
            elif column in ("js", "jb") and want is not None:
                assert json.loads(value) == want == written[column]
            elif column == "tz" and want is not None:
                assert value == want
                assert value.utcoffset() == timedelta(0)
            else:
                assert value == want, (column, value, want)
                if column in written:
                    assert value == written[column] or column == "bp", column
    assert got[2] == {"k": 3, **dict.fromkeys(COLUMNS)}  # NULLs stay NULLs
    assert table.column("bp")[0].as_py() == "ab "  # char(3) keeps its padding
    assert table.column("m").chunk(0).dictionary.to_pylist() == ["épique", "calm"]


_rows = st.lists(
    st.tuples(
        st.none() | st.integers(-(2**63), 2**63 - 1),
        optional_texts(max_size=40),
        st.none() | st.decimals(-(10**14) + 1, 10**14 - 1, places=4),
        st.none() | st.floats(allow_nan=False),
        st.none() | st.datetimes(timezones=st.just(UTC)),
        st.none() | st.uuids(),
    ),
    max_size=40,
)


@settings(max_examples=25)
@given(rows=_rows, batch_rows=st.integers(1, 7))
async def test_random_rows_round_trip_in_any_batching(
    wis: Wis2l, rows: list[tuple[Any, ...]], batch_rows: int
) -> None:
    columns = list(zip(*rows, strict=True)) if rows else [[]] * 6
    query = """SELECT i, t, n::numeric(18, 4) AS n, f, ts, u  -- unnest drops the typmod
               FROM unnest(%s::int8[], %s::text[], %s::numeric[], %s::float8[],
                           %s::timestamptz[], %s::uuid[]) AS t(i, t, n, f, ts, u)"""
    params = [list(column) for column in columns]
    table = await wis.database.to_arrow(query, params, batch_rows=batch_rows)
    assert table.num_rows == len(rows)
    got = [tuple(row.values()) for row in table.to_pylist()]
    assert got == [tuple(row) for row in rows]


async def test_one_dimensional_arrays_become_lists(wis: Wis2l) -> None:
    await wis.database.execute(
        "CREATE TABLE arrays (k int, tags text[], scores int4[], prices numeric(6, 2)[],"
        " keys uuid[], days date[])"
    )
    key = uuid.uuid4()
    rows = [
        (1, ["a", None, "ünï"], [1, -2, 3], [Decimal("1.50"), None], [key], [date(2024, 1, 2)]),
        (2, [], None, [], [], None),
        (3, None, [None, 7], [Decimal("-9999.99")], None, []),
    ]
    for row in rows:
        await wis.database.execute("INSERT INTO arrays VALUES (%s, %s, %s, %s, %s, %s)", row)
    table = await wis.database.to_arrow("SELECT * FROM arrays ORDER BY k", batch_rows=2)
    assert table.schema.field("prices").type == pa.list_(pa.decimal128(6, 2))
    assert table.schema.field("keys").type == pa.list_(pa.uuid())
    assert [tuple(r.values()) for r in table.to_pylist()] == rows
    with pytest.raises(ValidationError, match="multi-dimensional"):
        await wis.database.to_arrow("SELECT ARRAY[[1, 2], [3, 4]] AS grid")

    user = await wis.users.create(email="arr@example.com", name="Ar", subject="nocturna|arr")
    project = await wis.projects.create(owner_id=user.id, name="A", slug="arr-p", engine="web")
    await wis.components.create(
        project_id=project.id, name="Jump", language="gdscript", code="pass",
        prompt="a jump", model="m", experts=["physics", "feel"],
    )  # fmt: skip
    components = await wis.components.to_arrow()
    assert components.column("experts").to_pylist() == [["physics", "feel"]]


async def test_an_empty_result_keeps_its_schema(wis: Wis2l) -> None:
    await _kinds(wis)
    table = await wis.database.to_arrow("SELECT u, tz, n12, m FROM kinds WHERE false")
    assert table.num_rows == 0
    assert table.schema.names == ["u", "tz", "n12", "m"]
    assert table.schema.field("n12").type == pa.decimal128(12, 4)
    assert table.schema.field("tz").type == pa.timestamp("us", tz="UTC")


async def test_batches_keep_order_and_values(wis: Wis2l) -> None:
    query = """SELECT g AS id, (g * 0.01)::numeric(10, 2) AS price, 'row ' || g AS label,
                      CASE WHEN g %% 3 = 0 THEN NULL ELSE g::int8 * 1000000007 END AS big
               FROM generate_series(1, %(n)s) AS g ORDER BY g"""
    table = await wis.database.to_arrow(query, {"n": 2500}, batch_rows=300)
    assert table.num_rows == 2500
    assert table.column("id").num_chunks > 1
    assert table.column("id").to_pylist() == list(range(1, 2501))
    assert table.column("price").to_pylist()[-1] == Decimal("25.00")
    assert table.column("label").to_pylist()[1233] == "row 1234"
    big = table.column("big").to_pylist()
    assert big[:3] == [1000000007, 2000000014, None]
    assert big.count(None) == 2500 // 3

    async with wis.transaction() as tx:  # one batch at a time
        sizes = [b.num_rows async for b in tx.arrow_batches(query, {"n": 50}, batch_rows=20)]
    assert sizes == [20, 20, 10]
    with pytest.raises(ValidationError, check=field_is("batch_rows")):
        await wis.database.to_arrow("SELECT 1", batch_rows=0)


async def test_a_transaction_reads_its_own_writes(wis: Wis2l) -> None:
    user = await wis.users.create(email="arrow@example.com", name="Ar", subject="nocturna|ar")
    seen: list[Any] = []

    async def write_read_fail() -> None:
        async with wis.transaction() as tx:
            await tx.projects.create(owner_id=user.id, name="A", slug="arrow-a", engine="godot")
            seen.append((await tx.to_arrow("SELECT slug, engine FROM projects")).to_pylist())
            seen.append((await tx.projects.to_arrow()).num_rows)
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        await write_read_fail()
    assert seen == [[{"slug": "arrow-a", "engine": "godot"}], 1]
    assert (await wis.database.to_arrow("SELECT slug FROM projects")).num_rows == 0


async def test_repository_listings_and_typed_queries(wis: Wis2l) -> None:
    user = await wis.users.create(email="rep@example.com", name="Rp", subject="nocturna|rp")
    project = await wis.projects.create(
        owner_id=user.id, name="R", slug="rep-arrow", engine=Engine.BEVY
    )
    builds = [await wis.builds.create(project_id=project.id, target=f"t{i}") for i in range(5)]
    await wis.builds.update(builds[1].id, status="failed")
    table = await wis.builds.to_arrow()
    assert table.column("id").to_pylist() == [b.id for b in builds]  # whole, in order
    assert table.schema.field("artifacts").type == pa.string()
    failed = await wis.builds.to_arrow("find_all_by_status", status="failed")
    assert failed.column("target").to_pylist() == ["t1"]
    with pytest.raises(ValidationError, check=field_is("query")):
        await wis.builds.to_arrow("no_such_query")

    mine = await typed.to_arrow(wis.database, by_project, project_id=project.id)
    assert mine.column("target").to_pylist() == [f"t{i}" for i in range(5)]
    with pytest.raises(ValidationError, check=field_is("fn")):
        await typed.to_arrow(wis.database, print)


# What a module written by `wis2l db generate` holds: the query and its function.
_BY_PROJECT = typed.Query(
    name="by_project",
    text="SELECT id, target FROM builds WHERE project_id = %(project_id)s::uuid ORDER BY id",
    file="arrow.sql",
    line=1,
    shape="many",
)


async def by_project(db: typed.QueryMethods, /, *, project_id: uuid.UUID) -> list[Any]:
    return await db.fetch_all(_BY_PROJECT, {"project_id": project_id})


async def test_errors_are_ours_and_the_pool_survives(wis: Wis2l) -> None:
    with pytest.raises(Wis2lError, match="syntax"):
        await wis.database.to_arrow("SELEC 1")
    with pytest.raises(SchemaMissing):
        await wis.database.to_arrow("SELECT * FROM no_such_table")
    with pytest.raises(ValidationError, match=r"spans \(interval\[\]\).*::text"):
        await wis.database.to_arrow("SELECT 1 AS ok, ARRAY[interval '1 day'] AS spans")
    with pytest.raises(ValidationError, match="span"):
        await wis.database.to_arrow("SELECT interval '1 day' AS span")
    with pytest.raises(ValidationError, match="NaN"):
        await wis.database.to_arrow("SELECT 'NaN'::numeric(10, 2) AS n")
    # a failure half-way through the COPY: the server's error, then a usable connection
    with pytest.raises(ValidationError, match="division by zero"):
        await wis.database.to_arrow("SELECT 1 / (5000 - g) FROM generate_series(1, 9000) g")
    async with wis.transaction() as tx:
        with pytest.raises(ValidationError, match="division by zero"):
            await tx.to_arrow("SELECT 1 / (5000 - g) FROM generate_series(1, 9000) g")
    assert await wis.database.fetch_val("SELECT 41 + 1") == 42
    async with wis.transaction() as tx:  # text is read as UTF-8 only
        await tx.execute("SET LOCAL client_encoding TO 'LATIN1'")
        with pytest.raises(ValidationError, match="client_encoding"):
            await tx.to_arrow("SELECT 'é' AS e")
        assert (await tx.to_arrow("SELECT 1 AS one")).column("one").to_pylist() == [1]
    numbers = await wis.database.to_arrow(
        "SELECT 'NaN'::numeric AS n, 'Infinity'::numeric AS i, 1.5::numeric(50, 2) AS wide"
    )
    assert numbers.to_pylist() == [{"n": "NaN", "i": "Infinity", "wide": "1.50"}]


async def test_a_cancelled_read_leaves_the_pool_usable(wis: Wis2l) -> None:
    big = "SELECT g, md5(g::text) AS h FROM generate_series(1, 5000000) AS g"
    for delay in (0.0, 0.05, 0.3):  # before the COPY, in it, deep in it
        task = asyncio.create_task(wis.database.to_arrow(big))
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await wis.database.fetch_val("SELECT 'still here'") == "still here"
        table = await wis.database.to_arrow("SELECT 1 AS one")
        assert table.column("one").to_pylist() == [1]
    # every connection came back: as many reads at once as the pool holds all get one
    size = wis.settings.db_pool_max_size
    many = await asyncio.gather(*(wis.database.to_arrow("SELECT 2 AS two") for _ in range(size)))
    assert [t.num_rows for t in many] == [1] * size


async def test_the_missing_extra_is_a_config_error(
    wis: Wis2l, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wis2l_core.db

    monkeypatch.delitem(sys.modules, "wis2l_core.db.arrow", raising=False)
    monkeypatch.delattr(wis2l_core.db, "arrow", raising=False)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ConfigError, match=r"wis2l-core\[arrow\]"):
        await wis.database.to_arrow("SELECT 1")


def test_importing_the_library_loads_no_pyarrow() -> None:
    code = (
        "import sys, wis2l_core, wis2l_core.db, wis2l_core.cli, wis2l_core.db.typed;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyarrow', 'numpy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_export_writes_parquet_that_reads_back(
    wis: Wis2l,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = await wis.users.create(email="ex@example.com", name="Ex", subject="nocturna|ex")
    project = await wis.projects.create(owner_id=user.id, name="E", slug="ex-p", engine="web")
    builds = [await wis.builds.create(project_id=project.id, target=f"t{i}") for i in range(3)]
    await wis.builds.update(builds[2].id, status="failed")
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "report.sql").write_text(
        "-- name: since\nSELECT id, target, created_at FROM builds\n"
        "WHERE created_at >= %(since)s::timestamptz ORDER BY id;\n"
    )
    monkeypatch.setenv("DATABASE_URL", wis.settings.database_url)
    monkeypatch.setenv("WIS2L_DB_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("WIS2L_QUERIES", str(queries))
    out = tmp_path / "builds.parquet"

    argv = ["export", "builds.find_all_by_status", "-p", "status=failed", "--parquet", str(out)]
    assert await asyncio.to_thread(main, argv) == 0
    assert capsys.readouterr().out == f"wrote 1 rows to {out}\n"
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [builds[2].id]
    assert table.schema.field("created_at").type == pa.timestamp("us", tz="UTC")

    argv = ["export", "report.since", "-p", "since=2000-01-01", "--parquet", str(out)]
    assert await asyncio.to_thread(main, argv) == 0
    assert pq.read_table(out).column("target").to_pylist() == ["t0", "t1", "t2"]

    for argv, code, message in [
        (["report.nope"], 2, "has no query 'nope'"),
        (["nofile.q"], 2, "no query file nofile.sql"),
        (["report"], 2, "expected <file>.<name>"),
        (["report.since", "-p", "since"], 2, "expected NAME=VALUE"),
        (["report.since", "-p", "since=yesterday-ish"], 1, "ValidationError"),
        (["report.since", "-p", "since=x", "--database-url", UNREACHABLE], 3, "unavailable"),
    ]:
        bad = ["export", *argv, "--parquet", str(tmp_path / "bad.parquet")]
        assert await asyncio.to_thread(main, bad) == code, argv
        err = capsys.readouterr().err
        assert message in err
        assert err.count("\n") == 1, err
    assert not (tmp_path / "bad.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["builds.parquet", "queries"]
