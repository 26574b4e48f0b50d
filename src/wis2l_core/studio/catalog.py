"""What the studio knows about the schema, read from PostgreSQL's catalog.

One round trip reads every user table with its columns, primary key, indexed columns, foreign
keys and row estimate (``pg_class.reltuples``). Nothing here formats SQL: the names found
here reach queries only through :class:`psycopg.sql.Identifier` (see ``studio.queries``).
"""

from __future__ import annotations

from typing import Any

import attrs

from wis2l_core.db.pool import Database

__all__ = ["Catalog", "Column", "ForeignKey", "Table", "load_catalog"]

# Base and partitioned tables of every non-system schema; partitions are shown through
# their parent. Columns, keys and indexes as arrays, so one statement answers for all.
_CATALOG = """
SELECT n.nspname AS schema, c.relname AS name,
  CASE WHEN c.relkind = 'p'  -- a partitioned table has no statistics of its own
    THEN (SELECT sum(greatest(l.reltuples, 0))
            FROM pg_partition_tree(c.oid) t JOIN pg_class l ON l.oid = t.relid
           WHERE t.isleaf)
    ELSE c.reltuples END::float8 AS estimate,
  (SELECT coalesce(json_agg(json_build_object(
      'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
      'base', t.typname, 'notnull', a.attnotnull) ORDER BY a.attnum), '[]')
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
  (SELECT coalesce(json_agg(a.attname ORDER BY k.ord), '[]')
     FROM pg_index i CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
     JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
    WHERE i.indrelid = c.oid AND i.indisprimary) AS pk,
  (SELECT coalesce(json_agg(DISTINCT a.attname), '[]')
     FROM pg_index i JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = c.oid AND i.indpred IS NULL AND i.indkey[0] <> 0) AS indexed,
  (SELECT coalesce(json_agg(json_build_object(
      'name', f.conname, 'column', a.attname, 'ref_schema', rn.nspname,
      'ref_table', r.relname, 'ref_column', ra.attname)), '[]')
     FROM pg_constraint f
     JOIN pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = f.conkey[1]
     JOIN pg_class r ON r.oid = f.confrelid
     JOIN pg_namespace rn ON rn.oid = r.relnamespace
     JOIN pg_attribute ra ON ra.attrelid = f.confrelid AND ra.attnum = f.confkey[1]
    WHERE f.conrelid = c.oid AND f.contype = 'f' AND cardinality(f.conkey) = 1) AS fks
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
ORDER BY n.nspname = 'public' DESC, n.nspname, c.relname
"""


@attrs.frozen
class Column:
    """A column: its name, SQL type as PostgreSQL prints it, base type name, nullability."""

    name: str
    type: str
    base: str
    notnull: bool

    @property
    def is_json(self) -> bool:
        """True for ``json`` and ``jsonb`` columns (shown folded)."""
        return self.base in ("json", "jsonb")


@attrs.frozen
class ForeignKey:
    """A single-column foreign key from ``table.column`` to ``ref_table.ref_column``."""

    name: str
    schema: str
    table: str
    column: str
    ref_schema: str
    ref_table: str
    ref_column: str


@attrs.frozen
class Table:
    """A table with what the studio needs to list, page, sort and join it.

    Attributes:
        schema: its schema.
        name: its name.
        estimate: ``pg_class.reltuples`` (``-1`` when never analyzed); for a partitioned
            table, the sum over its partitions.
        columns: in table order.
        pk: the primary key's columns (empty without one: paged by ``ctid`` then).
        indexed: columns that lead an index (the ones offered for sorting).
        fks: its outgoing single-column foreign keys.
    """

    schema: str
    name: str
    estimate: float
    columns: tuple[Column, ...]
    pk: tuple[str, ...]
    indexed: frozenset[str]
    fks: tuple[ForeignKey, ...]

    @property
    def key(self) -> str:
        """The URL name: ``name`` in ``public``, else ``schema.name``."""
        return self.name if self.schema == "public" else f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column | None:
        """The column called ``name``, or ``None``."""
        return next((c for c in self.columns if c.name == name), None)


@attrs.frozen
class Catalog:
    """Every user table, by :attr:`Table.key`, and the foreign keys pointing at each."""

    tables: dict[str, Table]

    def get(self, key: str) -> Table | None:
        """The table whose URL name is ``key``, or ``None``."""
        return self.tables.get(key)

    def incoming(self, table: Table) -> list[ForeignKey]:
        """Foreign keys of other tables (or this one) that reference ``table``."""
        return [
            fk
            for t in self.tables.values()
            for fk in t.fks
            if fk.ref_schema == table.schema and fk.ref_table == table.name
        ]

    def by_name(self, schema: str, name: str) -> Table | None:
        """The table ``schema.name``, or ``None``."""
        return self.tables.get(name if schema == "public" else f"{schema}.{name}")


def _table(row: dict[str, Any]) -> Table:
    schema, name = row["schema"], row["name"]
    return Table(
        schema=schema,
        name=name,
        estimate=float(row["estimate"]),
        columns=tuple(Column(**c) for c in row["columns"]),
        pk=tuple(row["pk"]),
        indexed=frozenset(row["indexed"]),
        fks=tuple(
            ForeignKey(schema=schema, table=name, **fk)
            for fk in sorted(row["fks"], key=lambda f: f["column"])
        ),
    )


async def load_catalog(db: Database) -> Catalog:
    """Read every user table from the catalog in one query.

    Raises:
        ServiceUnavailable: the database cannot be reached.
    """
    rows = await db.fetch_all(_CATALOG)
    tables = [_table(r) for r in rows]
    return Catalog(tables={t.key: t for t in tables})
