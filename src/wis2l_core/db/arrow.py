"""Arrow tables straight from PostgreSQL's binary ``COPY``: no Python object per value.

:func:`read_batches` asks PostgreSQL what the query returns (its columns' types, so an
empty result still has a schema), then reads ``COPY (query) TO STDOUT (FORMAT binary)``
through psycopg's copy API and decodes each batch of rows with numpy: the rows' column
offsets are found one column at a time across the whole batch, fixed-width values are
gathered and byte-swapped in one step, variable-width ones are cut by their offsets. Only
one batch of raw COPY data is held at a time.

Types (PostgreSQL -> Arrow):

=========================== ==========================================================
``bool``                    ``bool``
``int2``/``int4``/``int8``  ``int16``/``int32``/``int64``; ``oid`` -> ``uint32``
``float4``/``float8``       ``float32``/``float64``
``numeric(p, s)``           ``decimal128(p, s)``; ``numeric`` without a precision (or
                            beyond 38 digits): ``string`` (the exact value as text)
``text``, ``varchar``,      ``string``
``bpchar``, ``name``
``bytea``                   ``binary``
``uuid``                    ``arrow.uuid`` (``fixed_size_binary(16)`` storage)
``date``                    ``date32``
``time``                    ``time64('us')``
``timestamp``               ``timestamp('us')``
``timestamptz``             ``timestamp('us', tz='UTC')``
``json``/``jsonb``          ``string`` (the JSON text; parse it where you need it)
an enum                     ``dictionary<int32, string>`` (its labels)
a 1-D array of the above    ``list<...>`` of the element's type (enums excepted)
=========================== ==========================================================

Anything else (multi-dimensional arrays, intervals, ranges, composite types ...) is
refused with a ``ValidationError`` naming the column: cast it in the query (``::text``). Timestamps
of ``infinity`` keep PostgreSQL's sentinel (the smallest/largest int64 microsecond).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pyarrow as pa
from psycopg import pq
from psycopg import sql as pgsql
from psycopg.abc import PQGen
from psycopg.pq.abc import PGconn, PGresult
from psycopg.rows import tuple_row
from psycopg.waiting import Wait

from wis2l_core.errors import ValidationError, Wis2lError

__all__ = [
    "BATCH_ROWS",
    "ArrowColumn",
    "RawBatch",
    "decode_batch",
    "describe",
    "read_batches",
    "read_table",
    "schema_of",
    "table_of",
]

BATCH_ROWS = 16_384
"""Rows decoded at a time (a batch of the table)."""

BATCH_BYTES = 64 << 20
"""A batch also ends once its raw COPY data reaches this size (wide rows)."""

_FIRST_BATCH = 1_024
"""Rows of the first batch, which measures the rows' width for the next ones."""

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_TRAILER = b"\xff\xff"
_PAD = bytes(16)  # so a gather of a NULL's (unused) bytes never reads past the buffer
_EPOCH_US = 946_684_800_000_000  # 2000-01-01, PostgreSQL's epoch, in Unix microseconds
_EPOCH_DAYS = 10_957
_I64_MIN = np.iinfo(np.int64).min
_I64_MAX = np.iinfo(np.int64).max
_I32_MIN = np.iinfo(np.int32).min
_I32_MAX = np.iinfo(np.int32).max
_POW10 = np.array([10**k for k in range(19)], dtype=np.int64)

Ints = npt.NDArray[np.int64]
Bytes = npt.NDArray[np.uint8]
Flags = npt.NDArray[np.bool_]

# type oid -> (kind, arrow type)
_FIXED: dict[int, tuple[str, Any]] = {
    16: ("bool", pa.bool_()),
    20: (">i8", pa.int64()),
    21: (">i2", pa.int16()),
    23: (">i4", pa.int32()),
    26: (">u4", pa.uint32()),
    700: (">f4", pa.float32()),
    701: (">f8", pa.float64()),
    1082: ("date", pa.date32()),
    1083: ("time", pa.time64("us")),
    1114: ("timestamp", pa.timestamp("us")),
    1184: ("timestamptz", pa.timestamp("us", tz="UTC")),
    2950: ("uuid", pa.uuid()),
}
_TEXT = {19, 25, 114, 1042, 1043}  # name, text, json, bpchar, varchar
_BYTEA, _JSONB, _NUMERIC = 17, 3802, 1700
_TEXT_KINDS = frozenset({"text", "jsonb", "enum", "list"})
# array type oid -> element type oid (one-dimensional arrays of the types above)
_ARRAYS = {
    1000: 16, 1001: 17, 1003: 19, 1005: 21, 1007: 23, 1009: 25, 1014: 1042, 1015: 1043,
    1016: 20, 1021: 700, 1022: 701, 1115: 1114, 1182: 1082, 1183: 1083, 1185: 1184,
    1231: 1700, 199: 114, 2951: 2950, 3807: 3802,
}  # fmt: skip


def _decimal(typmod: int) -> bool:
    """Whether a ``numeric`` typmod fits ``decimal128``: precision 1..38, scale 0..p."""
    if typmod < 4:
        return False
    precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
    return 1 <= precision <= 38 and scale <= precision


class ArrowColumn:
    """One result column: its name, PostgreSQL type and how it is decoded."""

    __slots__ = ("arrow_type", "element", "kind", "name", "oid", "precision", "scale")

    arrow_type: Any
    kind: str

    def __init__(self, name: str, oid: int, typmod: int, enum: bool = False) -> None:
        self.name, self.oid = name, oid
        self.precision = self.scale = 0
        self.element: ArrowColumn | None = None
        if oid in _ARRAYS:
            self.element = ArrowColumn(name, _ARRAYS[oid], typmod)
            self.kind, self.arrow_type = "list", pa.list_(self.element.arrow_type)
        elif oid in _FIXED:
            self.kind, self.arrow_type = _FIXED[oid]
        elif oid in _TEXT:
            self.kind, self.arrow_type = "text", pa.string()
        elif oid == _JSONB:
            self.kind, self.arrow_type = "jsonb", pa.string()
        elif oid == _BYTEA:
            self.kind, self.arrow_type = "bytea", pa.binary()
        elif oid == _NUMERIC and _decimal(typmod):
            self.precision, self.scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
            self.kind = "numeric" if self.precision <= 18 else "numeric38"
            self.arrow_type = pa.decimal128(self.precision, self.scale)
        elif oid == _NUMERIC:  # no precision, or more digits than a decimal128 holds
            self.kind, self.arrow_type = "numeric_text", pa.string()
        elif enum:
            self.kind, self.arrow_type = "enum", pa.dictionary(pa.int32(), pa.string())
        else:
            self.kind, self.arrow_type = "", None

    @property
    def supported(self) -> bool:
        """Whether this column's type can be decoded."""
        return self.arrow_type is not None


def _strip(text: str) -> str:
    """The query's text without a trailing ``;`` (it goes inside parentheses)."""
    return text.rstrip().rstrip(";").rstrip()


async def describe(conn: psycopg.AsyncConnection[Any], text: str, params: Any) -> list[ArrowColumn]:
    """The columns ``text`` returns, from PostgreSQL itself (the query runs with
    ``LIMIT 0``: planned, never executed for rows).

    Raises:
        ValidationError: the statement returns no rows, or a column's type has no Arrow
            decoding here (the message names the columns and their types).
    """
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(f"SELECT * FROM ({text}\n) AS _wis2l_arrow LIMIT 0", params)
    result = cur.pgresult
    if cur.description is None or result is None:  # pragma: no cover - SELECT * has rows
        raise ValidationError("to_arrow needs a query that returns rows", field="query")
    described = [(col.name, col.type_code, result.fmod(i)) for i, col in enumerate(cur.description)]
    columns = [ArrowColumn(name, oid, mod) for name, oid, mod in described]
    unknown = sorted({c.oid for c in columns if not c.supported})
    if not unknown:
        return columns
    await cur.execute(
        "SELECT oid::int8 AS oid, typtype::text AS typtype, format_type(oid, NULL) AS name"
        " FROM pg_type WHERE oid = ANY(%s::oid[])",
        (unknown,),
    )
    kinds = {int(row[0]): (row[1], row[2]) for row in await cur.fetchall()}
    columns = [
        ArrowColumn(name, oid, mod, enum=kinds.get(oid, ("", ""))[0] == "e")
        for name, oid, mod in described
    ]
    refused = [f"{c.name} ({kinds.get(c.oid, ('', c.oid))[1]})" for c in columns if not c.supported]
    if refused:
        raise ValidationError(
            "to_arrow cannot decode the column(s) "
            + ", ".join(refused)
            + ": cast them in the query, e.g. `col::text`",
            field="query",
        )
    return columns


class _Views:
    """The batch's buffer read as unaligned big-endian numbers starting at every byte, so
    a column's values are one fancy-index gather (``views.get(">i8")[positions]``)."""

    __slots__ = ("buf", "cache")

    def __init__(self, buf: bytes | bytearray) -> None:
        self.buf = buf
        self.cache: dict[str, npt.NDArray[Any]] = {}

    def get(self, dtype: str) -> npt.NDArray[Any]:
        view = self.cache.get(dtype)
        if view is None:
            width = np.dtype(dtype).itemsize
            count = len(self.buf) - width + 1
            view = np.ndarray((count,), dtype=dtype, buffer=self.buf, strides=(1,))
            self.cache[dtype] = view
        return view

    def read(self, pos: Ints, dtype: str) -> npt.NDArray[Any]:
        """Big-endian ``dtype`` values at ``pos``, in native byte order."""
        return self.get(dtype)[pos].astype(dtype.replace(">", "="))


def _validity(valid: Flags) -> tuple[Any, int]:
    nulls = int(valid.size - np.count_nonzero(valid))
    if not nulls:
        return None, 0
    return pa.py_buffer(np.packbits(valid, bitorder="little")), nulls


def _variable(
    arr: Bytes, start: Ints, length: Ints, valid: Flags, skip: int = 0
) -> tuple[Any, Any]:
    """(offsets, data) buffers of a variable-width column; ``skip`` bytes of each value
    are dropped (jsonb's version byte)."""
    sizes = np.where(valid, length - skip, 0)
    offsets = np.zeros(sizes.size + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    total = int(offsets[-1])
    if total:
        # The bytes to take, as a running sum: +1 inside a value, a jump between values.
        filled = sizes > 0
        first, size = (start + skip)[filled], sizes[filled]
        step = np.ones(total, dtype=np.intp)
        step[0] = first[0]
        step[offsets[:-1][filled][1:]] = first[1:] - (first[:-1] + size[:-1]) + 1
        data = arr[np.cumsum(step)]
    else:
        data = np.zeros(0, dtype=np.uint8)
    return pa.py_buffer(offsets), pa.py_buffer(data)


def _numeric_parts(value: bytes | bytearray) -> tuple[int, int, int, int]:
    """(sign, integer of all digits, power of ten of its last digit, dscale)."""
    ndigits, weight, sign, dscale = struct.unpack_from(">hhHh", value)
    digits = struct.unpack_from(f">{ndigits}h", value, 8)
    number = 0
    for digit in digits:
        number = number * 10_000 + digit
    return sign, number, 4 * (weight - ndigits + 1), dscale


def _numeric_special(column: ArrowColumn, sign: int) -> Wis2lError:
    what = {0xC000: "NaN", 0xD000: "Infinity", 0xF000: "-Infinity"}.get(sign, hex(sign))
    return ValidationError(
        f"to_arrow: column {column.name} holds numeric {what}, which a decimal cannot",
        field="query",
    )


def _numeric_text(column: ArrowColumn, value: bytes | bytearray) -> str:
    sign, number, exponent, dscale = _numeric_parts(value)
    if sign in (0xC000, 0xD000, 0xF000):
        return {0xC000: "NaN", 0xD000: "Infinity", 0xF000: "-Infinity"}[sign]
    decimal = Decimal((1 if sign == 0x4000 else 0, tuple(map(int, str(number))), exponent))
    return format(decimal, f".{dscale}f")


def _numeric_int(column: ArrowColumn, value: bytes | bytearray) -> int:
    """The unscaled integer of a ``numeric(p, s)`` value (``value * 10**s``)."""
    sign, number, exponent, _ = _numeric_parts(value)
    if sign not in (0, 0x4000):
        raise _numeric_special(column, sign)
    shift = exponent + column.scale
    unscaled: int = number * 10**shift if shift >= 0 else number // 10**-shift
    return -unscaled if sign == 0x4000 else unscaled


def _numeric18(column: ArrowColumn, views: _Views, start: Ints, valid: Flags) -> Any:
    """``numeric(p <= 18, s)``: the unscaled value fits an int64; decoded for all rows at
    once, one base-10000 digit position at a time."""
    ndigits = views.read(start, ">i2").astype(np.int64)
    weight = views.read(start + 2, ">i2").astype(np.int64)
    sign = views.read(start + 4, ">u2")
    special = valid & (sign != 0) & (sign != 0x4000)
    if special.any():
        raise _numeric_special(column, int(sign[np.argmax(special)]))
    ndigits = np.where(valid, ndigits, 0)
    value = np.zeros(start.size, dtype=np.int64)
    for k in range(int(ndigits.max(initial=0))):
        has = k < ndigits
        digit = np.where(has, views.read(np.where(has, start + 8 + 2 * k, start), ">i2"), 0)
        exponent = 4 * (weight - k) + column.scale
        up = _POW10[np.clip(exponent, 0, 18)]
        down = _POW10[np.clip(-exponent, 0, 18)]
        value += np.where(exponent >= 0, digit * up, digit // down)
    value = np.where(sign == 0x4000, -value, value)
    return _decimal_buffer(value, value >> 63)


def _decimal_buffer(low: Ints, high: Ints) -> Any:
    pair = np.empty((low.size, 2), dtype="<i8")
    pair[:, 0], pair[:, 1] = low, high
    return pa.py_buffer(pair)


def _list(column: ArrowColumn, views: _Views, start: Ints, valid: Flags) -> Any:
    """A one-dimensional array column as an Arrow list: each row's elements are found
    one element position at a time across the rows that have that many, then decoded
    together as one child column."""
    n = start.size
    bitmap, nulls = _validity(valid)
    ndim = np.where(valid, views.read(start, ">i4"), 0)
    if (ndim > 1).any():
        raise ValidationError(
            f"to_arrow: column {column.name} holds a multi-dimensional array; "
            "unnest it or cast it (::text)",
            field="query",
        )
    count = np.where(ndim == 1, views.read(np.where(ndim == 1, start + 12, start), ">i4"), 0)
    count = count.astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(count, out=offsets[1:])
    total = int(offsets[-1])
    if total > np.iinfo(np.int32).max:  # pragma: no cover - a batch is at most 64 MB
        raise ValidationError(f"to_arrow: column {column.name}: too many elements", field="query")
    elem_start = np.zeros(total, dtype=np.int64)
    elem_length = np.zeros(total, dtype=np.int64)
    rows = np.flatnonzero(count)
    pos = start[rows] + 20  # past ndim, flags, element type, size and lower bound
    k = 0
    while rows.size:
        length = views.read(pos, ">i4").astype(np.int64)
        slot = offsets[rows] + k
        elem_start[slot], elem_length[slot] = pos + 4, length
        pos = pos + 4 + np.maximum(length, 0)
        k += 1
        more = count[rows] > k
        rows, pos = rows[more], pos[more]
    assert column.element is not None
    child = _decode(column.element, views, elem_start, elem_length, total)
    return pa.Array.from_buffers(
        column.arrow_type,
        n,
        [bitmap, pa.py_buffer(offsets.astype(np.int32))],
        nulls,
        children=[child],
    )


def _decode(column: ArrowColumn, views: _Views, start: Ints, length: Ints, n: int) -> Any:
    """One column of a batch as an Arrow array."""
    valid = length >= 0
    bitmap, nulls = _validity(valid)
    kind, kind_type = column.kind, column.arrow_type
    safe = np.where(valid, start, 0)
    if kind == "list":
        return _list(column, views, safe, valid)
    if kind.startswith(">"):
        values = views.read(safe, kind)
        return pa.Array.from_buffers(kind_type, n, [bitmap, pa.py_buffer(values)], nulls)
    if kind == "bool":
        flags = views.get("u1")[safe] != 0
        return pa.Array.from_buffers(
            kind_type, n, [bitmap, pa.py_buffer(np.packbits(flags, bitorder="little"))], nulls
        )
    if kind in ("timestamp", "timestamptz"):
        raw = views.read(safe, ">i8")
        finite = (raw != _I64_MIN) & (raw != _I64_MAX)
        values = np.where(finite, raw + _EPOCH_US, raw)
        return pa.Array.from_buffers(kind_type, n, [bitmap, pa.py_buffer(values)], nulls)
    if kind == "time":
        return pa.Array.from_buffers(
            kind_type, n, [bitmap, pa.py_buffer(views.read(safe, ">i8"))], nulls
        )
    if kind == "date":
        raw = views.read(safe, ">i4")
        finite = (raw != _I32_MIN) & (raw != _I32_MAX)
        values = np.where(finite, raw + _EPOCH_DAYS, raw).astype(np.int32)
        return pa.Array.from_buffers(kind_type, n, [bitmap, pa.py_buffer(values)], nulls)
    if kind == "uuid":
        storage = pa.Array.from_buffers(
            pa.binary(16), n, [bitmap, pa.py_buffer(views.get("V16")[safe])], nulls
        )
        return pa.ExtensionArray.from_storage(kind_type, storage)
    if kind in ("text", "jsonb", "bytea", "enum"):
        skip = 1 if kind == "jsonb" else 0
        offsets, data = _variable(views.get("u1"), start, length, valid, skip)
        plain = pa.binary() if kind == "bytea" else pa.string()
        array = pa.Array.from_buffers(plain, n, [bitmap, offsets, data], nulls)
        return array.dictionary_encode() if kind == "enum" else array
    if kind == "numeric":
        return pa.Array.from_buffers(
            kind_type, n, [bitmap, _numeric18(column, views, safe, valid)], nulls
        )
    # numeric(p > 18, s) and numeric without a precision: one Python value per row
    cells = [
        None if size < 0 else views.buf[offset : offset + size]
        for offset, size in zip(start.tolist(), length.tolist(), strict=True)
    ]
    if kind == "numeric_text":
        return pa.array(
            [None if c is None else _numeric_text(column, c) for c in cells], pa.string()
        )
    unscaled = [0 if c is None else _numeric_int(column, c) for c in cells]
    blob = b"".join(u.to_bytes(16, "little", signed=True) for u in unscaled)
    return pa.Array.from_buffers(kind_type, n, [bitmap, pa.py_buffer(blob)], nulls)


class RawBatch:
    """A batch of binary COPY tuples as they came: their bytes end to end and each one's
    size. Plain bytes and an int array, not an object per row: a notebook's large heap
    makes the garbage collector walk every container object a loop leaves alive."""

    __slots__ = ("data", "sizes")

    def __init__(self) -> None:
        self.data = bytearray()
        self.sizes = array("q")

    def __len__(self) -> int:
        return len(self.sizes)

    def add(self, row: bytes | memoryview) -> None:
        """Append one tuple."""
        self.data += row
        self.sizes.append(len(row))


def decode_batch(columns: Sequence[ArrowColumn], schema: Any, rows: RawBatch) -> Any:
    """A ``RecordBatch`` of the binary COPY tuples in ``rows``.

    Raises:
        Wis2lError: the data is not one tuple per message of ``len(columns)`` fields.
    """
    n = len(rows)
    sizes = np.frombuffer(rows.sizes, dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
    rows.data += _PAD
    views = _Views(rows.data)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    if n and not (views.read(starts, ">i2") == len(columns)).all():
        raise Wis2lError("to_arrow: COPY sent a row with an unexpected number of fields")
    pos = starts + 2
    arrays = []
    for column in columns:
        length = views.read(pos, ">i4").astype(np.int64)
        start = pos + 4
        pos = start + np.maximum(length, 0)
        arrays.append(_decode(column, views, start, length, n))
    if n and not (pos == ends).all():
        raise Wis2lError("to_arrow: COPY rows did not end where their fields did")
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def schema_of(columns: Sequence[ArrowColumn]) -> Any:
    """The Arrow schema of ``columns`` (each field nullable)."""
    return pa.schema([pa.field(c.name, c.arrow_type) for c in columns])


def _header(first: bytes | memoryview) -> int:
    """The length of the binary COPY header at the start of the first message."""
    head = bytes(first[:19])
    if not head.startswith(_SIGNATURE):
        raise Wis2lError("to_arrow: COPY data does not start with the binary signature")
    extension: int = struct.unpack_from(">I", head, 15)[0]
    return 19 + extension


def _failure(pgconn: PGconn, encoding: str) -> PQGen[None]:
    """After a COPY that ended early: take its results and raise the server's error."""
    failed: PGresult | None = None
    while True:
        while pgconn.is_busy():
            while not (yield Wait.R):
                pass
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            break
        if failed is None and result.status != pq.ExecStatus.COMMAND_OK:
            failed = result
    if failed is not None:
        raise psycopg.errors.error_from_result(failed, encoding=encoding)
    raise Wis2lError("to_arrow: the COPY ended without its trailer")


def _take(pgconn: PGconn, rows: RawBatch, limit: int, encoding: str, header: bool) -> PQGen[bool]:
    """Append COPY messages to ``rows`` until it holds ``limit``; ``True`` once the trailer
    came (the COPY's end is then left for psycopg's ``Copy.read`` to take). With
    ``header``, the first message starts with the COPY header, which is dropped.

    psycopg's own ``copy_from`` step, one message at a time in a loop that awaits only
    when libpq has nothing buffered: per row, a C call and an append.

    Raises:
        psycopg.Error: the COPY ended without its trailer: the query failed mid-way.
    """
    get = pgconn.get_copy_data
    data_add, size_add = rows.data.__iadd__, rows.sizes.append
    need = limit - len(rows)
    read_ahead = True
    while need > 0:
        nbytes, data = get(1)
        if nbytes > 0:
            if header:
                data, header = data[_header(data) :], False
                nbytes = len(data)
            if nbytes == 2 and data == _TRAILER:
                return True
            data_add(data)
            size_add(nbytes)
            need -= 1
            read_ahead = True
        elif nbytes == 0 and read_ahead:
            # What arrived while decoding is read without a trip through the event loop.
            pgconn.consume_input()
            read_ahead = False
        elif nbytes == 0:
            while not (yield Wait.R):
                pass
            pgconn.consume_input()
        else:  # the end with no trailer: the server sent an error instead of rows
            yield from _failure(pgconn, encoding)
    return False


async def read_batches(
    conn: psycopg.AsyncConnection[Any],
    query: str | pgsql.Composable,
    params: Mapping[str, Any] | Sequence[Any] | None,
    *,
    batch_rows: int = BATCH_ROWS,
) -> AsyncIterator[Any]:
    """The result of ``query`` as Arrow ``RecordBatch``es on ``conn`` (at least one: an
    empty result gives one empty batch, with the schema).

    A batch holds ``batch_rows`` rows, or fewer when they are wide: the first batch is
    small, and later ones hold about :data:`BATCH_BYTES` of raw COPY data at most.

    Raises:
        ValidationError: a column type with no decoding here, or a bad ``batch_rows``.
        psycopg.Error: the query failed (callers translate it with ``map_errors``).
    """
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ValidationError("batch_rows must be a positive int", field="batch_rows")
    text = query.as_string(conn) if isinstance(query, pgsql.Composable) else query
    body = _strip(text)
    columns = await describe(conn, body, params)
    schema = schema_of(columns)
    encoding = conn.info.encoding
    if encoding != "utf-8" and any(c.kind in _TEXT_KINDS for c in columns):
        raise ValidationError(
            f"to_arrow reads text as UTF-8, but the connection's client_encoding is {encoding}",
            field="query",
        )
    limit = min(batch_rows, _FIRST_BATCH)
    first, done = True, False
    async with conn.cursor().copy(f"COPY ({body}\n) TO STDOUT (FORMAT binary)", params) as copy:
        while not done:
            rows = RawBatch()
            done = await conn.wait(_take(conn.pgconn, rows, limit, encoding, first))
            if rows or first:
                if rows.data:
                    limit = max(1, min(batch_rows, BATCH_BYTES * len(rows) // len(rows.data)))
                yield decode_batch(columns, schema, rows)
            first = False
        await copy.read()  # the COPY's end (its result), after the trailer


def table_of(batches: Sequence[Any]) -> Any:
    """One ``pyarrow.Table`` of ``batches`` (at least one, which gives the schema)."""
    return pa.Table.from_batches(batches, schema=batches[0].schema)


async def read_table(
    conn: psycopg.AsyncConnection[Any],
    query: str | pgsql.Composable,
    params: Mapping[str, Any] | Sequence[Any] | None,
    *,
    batch_rows: int = BATCH_ROWS,
) -> Any:
    """The whole result of ``query`` as one ``pyarrow.Table`` (see :func:`read_batches`)."""
    return table_of([b async for b in read_batches(conn, query, params, batch_rows=batch_rows)])
