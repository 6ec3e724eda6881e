"""CSV fidelity (DESIGN.md "Fidelity", issue 12 items 1-7): the file's values, exactly.

Each rule is checked over plain Flight do_put (CSV command) and HTTP /v1/ingest, and read
back over Flight, Flight SQL (the ADBC driver) and HTTP; the storage-dependent round trip
runs on local disk and S3. Generated files put odd values at random positions and compare
with an independent whole-file reading (pyarrow on the whole file in one block, Python's csv
module for the text)."""

from __future__ import annotations

import csv
import decimal
import io
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import adbc_driver_flightsql.dbapi as dbapi
import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.flight as flight
import pytest

from flightlake import csvbytes, csvread
from flightlake.errors import InvalidInput
from flightlake.fidelity import normalize_schema
from flightlake.lake import Lake
from tests.http_helpers import http_server
from tests.servers import Running, flight_server, make_settings
from tests.test_hostile import assert_clean, put_csv


@dataclass
class Both:
    """Flight and HTTP front ends over one lake."""

    flight: Running
    http: httpx.Client

    @property
    def lake(self) -> Lake:
        return self.flight.lake


def _both(url: str, s3: object) -> Iterator[Both]:
    settings = make_settings(url, s3)
    with flight_server(settings) as running, http_server(running.lake, settings) as web:
        yield Both(running, web.client)


@pytest.fixture
def both(storage_url: str, request: pytest.FixtureRequest) -> Iterator[Both]:
    s3 = request.getfixturevalue("s3_server") if storage_url.startswith("s3://") else None
    yield from _both(storage_url, s3)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Both]:
    folder = tmp_path / "lake"
    folder.mkdir()
    yield from _both(str(folder), None)


def http_ingest(client: httpx.Client, name: str, body: bytes) -> httpx.Response:
    return client.post(f"/v1/ingest?name={name}", files={"file": (f"{name}.csv", body)})


def flight_table(srv: Running, sql: str) -> pa.Table:
    return srv.client.do_get(flight.Ticket(sql.encode())).read_all()


def adbc_table(srv: Running, sql: str) -> pa.Table:
    with dbapi.connect(srv.location, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def http_arrow(client: httpx.Client, sql: str) -> pa.Table:
    response = client.post(
        "/v1/sql", json={"sql": sql}, headers={"accept": "application/vnd.apache.arrow.stream"}
    )
    assert response.status_code == 200, response.text
    return pa.ipc.open_stream(response.content).read_all()


def ingest_both_ways(env: Both, name: str, body: bytes) -> list[str]:
    """The same bytes in over Flight (as ``name``) and HTTP (as ``name_http``)."""
    assert put_csv(env.flight.client, name, body, chunk=4099)["rows_written"] >= 0
    response = http_ingest(env.http, f"{name}_http", body)
    assert response.status_code == 200, response.text
    return [name, f"{name}_http"]


def read_everywhere(env: Both, sql: str) -> list[pa.Table]:
    """One query over Flight, Flight SQL (ADBC) and HTTP (Arrow); all must agree."""
    tables = [
        flight_table(env.flight, sql),
        adbc_table(env.flight, sql),
        http_arrow(env.http, sql),
    ]
    for other in tables[1:]:
        assert other.schema.types == tables[0].schema.types
        assert _same(other.to_pylist(), tables[0].to_pylist())
    return tables


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


# -- 1. only an empty unquoted field is NULL -------------------------------------------------
NULL_LIKE = [
    "NA", "N/A", "n/a", "NaN", "nan", "-nan", "-NaN", "null", "NULL", "Null", "None", "none",
    "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "1.#IND", "1.#QNAN", "<NA>", "NIL",
    "nil", "undefined", "-", "?", ".", " ", "  ",
]  # fmt: skip


def test_null_like_words_are_data_and_only_empty_unquoted_is_null(both: Both) -> None:
    lines = ["i,word,n"] + [f"{i},{w},{i}" for i, w in enumerate(NULL_LIKE)]
    lines += [f'{len(NULL_LIKE)},"",', f"{len(NULL_LIKE) + 1},,7"]
    body = ("\n".join(lines) + "\n").encode()
    for name in ingest_both_ways(both, "words", body):
        for table in read_everywhere(both, f"SELECT i, word, n FROM {name} ORDER BY i"):
            assert table.schema.field("word").type == pa.string()
            assert table.schema.field("n").type == pa.int64()
            got = table.to_pylist()
            assert [r["word"] for r in got] == [*NULL_LIKE, "", None]
            assert got[-2]["n"] is None  # an empty unquoted field in a number column
            assert got[-1]["n"] == 7


@pytest.mark.parametrize("word", ["NA", "N/A", "null", "None", "#N/A", "NULL", "-", '""'])
def test_a_null_like_word_makes_a_number_column_text(local: Both, word: str) -> None:
    body = f"x\n1\n{word}\n2\n".encode()
    put_csv(local.flight.client, "w", body)
    table = flight_table(local.flight, "SELECT x FROM w")
    assert table.schema.field("x").type == pa.string()
    assert table.column("x").to_pylist() == ["1", "" if word == '""' else word, "2"]


# -- 2. NaN and infinities are floats --------------------------------------------------------
FLOATS = [
    ("1.5", 1.5), ("NaN", math.nan), ("nan", math.nan), ("-nan", math.nan), ("inf", math.inf),
    ("-inf", -math.inf), ("Inf", math.inf), ("-Inf", -math.inf), ("INF", math.inf),
    ("Infinity", math.inf), ("-Infinity", -math.inf), ("+inf", math.inf), ("1e308", 1e308),
    ("-0.0", -0.0), ("", None),
]  # fmt: skip


def test_nan_and_infinities_are_floats(both: Both) -> None:
    body = ("i,x\n" + "".join(f"{i},{t}\n" for i, (t, _) in enumerate(FLOATS))).encode()
    for name in ingest_both_ways(both, "floats", body):
        for table in read_everywhere(both, f"SELECT i, x FROM {name} ORDER BY i"):
            assert table.schema.field("x").type == pa.float64()
            got = table.column("x").to_pylist()
            for (text, want), value in zip(FLOATS, got, strict=True):
                if want is None or not math.isnan(want):
                    assert value == want, text
                else:
                    assert math.isnan(value), text


# -- 3. integers keep every digit -------------------------------------------------------------
I64 = 2**63
BIG_CASES = [
    ([str(I64 - 1), str(-I64)], pa.int64()),
    ([str(I64 - 1), str(I64)], pa.decimal128(38, 0)),
    ([str(-I64), str(-I64 - 1)], pa.decimal128(38, 0)),
    (["5", "1" * 30], pa.decimal128(38, 0)),
    (["-" + "9" * 38, "0"], pa.decimal128(38, 0)),
    (["1", "9" * 39], pa.string()),
    (["1.5", str(I64 + 1)], pa.string()),  # a double would round the integer
    (["1.5", str(I64)], pa.string()),  # beyond int64 and mixed with fractions
    (["1.5", "9007199254740993"], pa.string()),  # 2**53 + 1: not a double
    (["1.5", "9007199254740992"], pa.float64()),  # 2**53: a double holds it exactly
    (["+5", "6"], pa.float64()),  # pyarrow's int64 parser refuses "+5"; a double is exact
]


@pytest.mark.parametrize(("values", "kind"), BIG_CASES)
@pytest.mark.parametrize("place", ["first", "last"])
def test_integers_keep_every_digit(
    local: Both, values: list[str], kind: pa.DataType, place: str, monkeypatch
) -> None:
    monkeypatch.setattr(csvread, "SAMPLE_BYTES", 4096)
    monkeypatch.setattr(csvread, "BLOCK_BYTES", 4096)
    filler = [str(i) for i in range(3000)]
    column = values + filler if place == "first" else filler + values
    body = ("id\n" + "\n".join(column) + "\n").encode()
    for name in ingest_both_ways(local, "big", body):
        table = read_everywhere(local, f"SELECT id FROM {name}")[0]
        assert table.schema.field("id").type == kind
        got = table.column("id").to_pylist()
        if kind == pa.float64():
            assert [float(v) for v in column] == got
        else:
            assert [str(v) for v in got] == [str(decimal.Decimal(v)) for v in column] or [
                str(v) for v in got
            ] == column


def test_big_integers_over_http_json(local: Both) -> None:
    body = f"id\n{I64 - 1}\n{I64}\n{'1' * 30}\n".encode()
    assert http_ingest(local.http, "bigjson", body).status_code == 200
    response = local.http.post("/v1/sql", json={"sql": "SELECT id FROM bigjson ORDER BY id"})
    assert response.status_code == 200, response.text
    assert [r["id"] for r in json.loads(response.text)] == [I64 - 1, I64, int("1" * 30)]


# -- leading zeros stay ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (["007", "42"], pa.string()),
        (["-01", "5"], pa.string()),
        (["00.5", "1.5"], pa.string()),
        (["00", "1"], pa.string()),
        (["0", "10"], pa.int64()),
        (["0.5", "-0.25"], pa.float64()),
    ],
)
@pytest.mark.parametrize("place", ["first", "last"])
def test_leading_zeros_stay(
    local: Both, values: list[str], kind: pa.DataType, place: str, monkeypatch
) -> None:
    monkeypatch.setattr(csvread, "SAMPLE_BYTES", 4096)
    filler = [str(i + 1) for i in range(3000)]
    column = values + filler if place == "first" else filler + values
    put_csv(local.flight.client, "z", ("code\n" + "\n".join(column) + "\n").encode())
    table = flight_table(local.flight, "SELECT code FROM z")
    assert table.schema.field("code").type == kind
    if kind == pa.string():
        assert table.column("code").to_pylist() == column


@pytest.mark.parametrize(
    ("late", "kind"),
    [
        (["12", "-3"], pa.int64()),
        (["007", "1"], pa.string()),
        ([str(I64), "1"], pa.decimal128(38, 0)),
        (["9" * 39], pa.string()),
        (["1.5", "nan"], pa.float64()),
        (["2024-01-01", "2024-01-02 10:00:00"], pa.timestamp("us")),  # stored spelling of [s]
        (["true", "FALSE"], pa.bool_()),
        (["NA"], pa.string()),
    ],
)
def test_a_column_empty_in_the_sample_takes_its_type_from_later_values(
    tmp_path: Path, late: list[str], kind: pa.DataType, monkeypatch
) -> None:
    monkeypatch.setattr(csvread, "SAMPLE_BYTES", 4096)
    body = "id,x\n" + "".join(f"{i},\n" for i in range(3000))
    body += "".join(f"{3000 + i},{v}\n" for i, v in enumerate(late))
    lake = Lake(make_settings(str(tmp_path / "lake")))
    try:
        lake.ingest_csv("late", [body.encode()])
        stored = lake.catalog.find("late")
        assert stored is not None
        assert stored.schema.field("x").type == kind
        got = lake.query("SELECT x FROM late WHERE x IS NOT NULL ORDER BY id").read_all()
        if kind in (pa.string(), pa.decimal128(38, 0)):
            assert [str(v) for v in got.column("x").to_pylist()] == late
    finally:
        lake.close()


def test_zero_padded_number_straddling_a_block_edge_is_seen(tmp_path: Path, monkeypatch) -> None:
    """The raw-byte scan that decides whether numbers' text must be checked sees a value
    cut by a read block edge, and does not fire on dates cut by one."""
    block = 4096
    monkeypatch.setattr(csvread, "BLOCK_BYTES", block)
    monkeypatch.setattr(csvread, "SAMPLE_BYTES", block)
    dates = b"n,d\n" + b"".join(b"%d,2021-01-06\n" % (i % 7) for i in range(3000))
    path = tmp_path / "d.csv"
    path.write_bytes(dates)
    schema = pa.schema([("n", pa.int64()), ("d", pa.date32())])
    sources: list = []
    for _ in csvread._batches(path, schema, block, source_out=sources):
        pass
    assert not sources[0].bytes.suspect
    lake = Lake(make_settings(str(tmp_path / "lake")))
    try:
        for shift in range(-4, 4):
            head = b"n,d,t\n" + b"5,2021-01-06,a\n" * 300
            pad = 2 * block + shift - len(head) - len(b"5,2021-01-06,\n")
            body = head + b"5,2021-01-06," + b"a" * pad + b"\n"
            assert len(body) == 2 * block + shift
            body += b"007,2021-01-07,b\n" + b"6,2021-01-08,c\n" * 10
            lake.ingest_csv("edge0", [body], mode="overwrite")
            stored = lake.catalog.find("edge0")
            assert stored is not None
            assert stored.schema.field("n").type == pa.string(), shift
            got = lake.query("SELECT n FROM edge0 WHERE t = 'b'").read_all().to_pylist()
            assert got == [{"n": "007"}], shift
    finally:
        lake.close()


# -- 4. the type does not depend on where a value sits ----------------------------------------
def test_issue_example_odd_rows_first_or_last(both: Both) -> None:
    ordinary = "".join(f"{i},2024-03-06 10:05:00,5,{10000 + i}\n" for i in range(120_000))
    odd = "900001,2024-03-05 10:15:30.250,12.5,00501\n900002,2024-03-06 11:00:00.5,7,02134\n"
    head = "id,completed_at,amount,code\n"
    results = []
    for name, body in [("first", head + odd + ordinary), ("last", head + ordinary + odd)]:
        put_csv(both.flight.client, name, body.encode())
        table = flight_table(
            both.flight, f"SELECT completed_at, amount, code FROM {name} WHERE id > 900000"
        )
        results.append((table.schema, table.sort_by("code").to_pylist()))
    assert results[0] == results[1]
    schema, got = results[0]
    assert schema.field("code").type == pa.string()
    assert pa.types.is_timestamp(schema.field("completed_at").type)
    assert [r["code"] for r in got] == ["00501", "02134"]
    assert got[0]["completed_at"].microsecond == 250_000


ODD_VALUES = [
    "1.5", "NA", "007", str(I64), "9" * 40, "2024-01-01 10:00:00.5", "2024-01-01", "true",
    "10:00:00", "x", "-3", "2024-01-01T10:00:00Z", "nan", "inf", "+7", " 8", "1e3",
]  # fmt: skip
BASES = {
    "int": lambda r: str(r.randrange(-1000, 1000)),
    "float": lambda r: f"{r.uniform(-1e3, 1e3):.3f}",
    "date": lambda r: f"2024-{r.randrange(1, 13):02d}-{r.randrange(1, 29):02d}",
    "ts": lambda r: f"2024-05-{r.randrange(1, 29):02d} {r.randrange(10, 24)}:15:00",
    "bool": lambda r: r.choice(["true", "false"]),
    "time": lambda r: f"{r.randrange(10, 24)}:{r.randrange(10, 60)}:00",
    "text": lambda r: r.choice(["a", "b c", "d,e", 'f"g', "h\r\ni"]),
    "empty": lambda r: "",
}


def expected_table(body: bytes) -> tuple[pa.Schema, list[dict]]:
    """Independent whole-file reading: pyarrow's types from ALL values in one block (the
    same null/true/false words), the text from Python's csv module, then the fidelity rules
    written out again here."""
    whole = pacsv.read_csv(
        io.BytesIO(body),
        read_options=pacsv.ReadOptions(block_size=len(body) + 1),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=csvread.convert_options(),
    )
    texts = list(csv.reader(io.StringIO(body.decode(), newline="")))
    header, records = texts[0], texts[1:]
    fields = []
    for index, f in enumerate(whole.schema):
        column = [r[index] for r in records if r[index] != ""]
        kind = f.type
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        if pa.types.is_null(kind):
            kind = pa.string()
        elif numeric and any(
            v.strip(" \t").lstrip("+-")[:1] == "0" and v.strip(" \t").lstrip("+-")[1:2].isdigit()
            for v in column
        ):
            kind = pa.string()  # fmt: skip
        elif pa.types.is_floating(kind):
            ints = [int(v) for v in column if v.strip(" \t").lstrip("+-").isdigit()]
            beyond = any(not -(2**63) <= v < 2**63 for v in ints)
            if beyond and len(ints) == len(column) and all(len(str(abs(v))) <= 38 for v in ints):
                kind = pa.decimal128(38, 0)  # integers only, some beyond int64
            elif beyond or any(int(float(v)) != v for v in ints):
                kind = pa.string()  # a double would not hold them
        fields.append(pa.field(f.name, kind))
    schema = pa.schema(fields)
    out = []
    for r, record in enumerate(records):
        row = {}
        for index, f in enumerate(schema):
            text = record[index]
            if text == "":
                row[f.name] = None
            elif pa.types.is_string(f.type):
                row[f.name] = text
            elif pa.types.is_decimal(f.type):
                row[f.name] = decimal.Decimal(text.strip())
            else:
                row[f.name] = whole.column(index)[r].as_py()
        out.append(row)
    assert header == schema.names
    return schema, out


def generated_csv(seed: int, rows: int = 2500) -> bytes:
    r = random.Random(seed)
    kinds = list(BASES)
    r.shuffle(kinds)
    columns = kinds[: r.randrange(3, len(kinds) + 1)]
    grid = [[BASES[k](r) for k in columns] for _ in range(rows)]
    for _ in range(r.randrange(0, 4)):  # odd values at random positions
        grid[r.randrange(rows)][r.randrange(len(columns))] = r.choice(ODD_VALUES)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([f"c_{k}" for k in columns])
    writer.writerows(grid)
    return out.getvalue().encode()


def test_generated_files_match_a_whole_file_reading(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(csvread, "SAMPLE_BYTES", 2048)  # most odd values lie past the sample
    monkeypatch.setattr(csvread, "BLOCK_BYTES", 4096)
    lake = Lake(make_settings(str(tmp_path / "lake")))
    try:
        for seed in range(60):
            body = generated_csv(seed)
            schema, want = expected_table(body)
            name = f"g{seed}"
            lake.ingest_csv(name, [body])
            stored = lake.catalog.find(name)
            assert stored is not None
            assert stored.schema.types == normalize_schema(schema).types, (seed, stored.schema)
            got = lake.query(f"SELECT * FROM {name}").read_all()
            assert _same(got.to_pylist(), want), seed
    finally:
        lake.close()


KIND_SAMPLES = [
    "5", str(I64), "1.5", "true", "2024-01-01", "10:00:00", "2024-01-01 10:00:00",
    "2024-01-01 10:00:00.5", "2024-01-01T10:00:00Z", "2024-01-01T10:00:00.5Z", "x", "007",
    "nan", "-0",
]  # fmt: skip


def test_every_pair_of_kinds_widens_to_the_whole_file_type(tmp_path: Path, monkeypatch) -> None:
    """A column of one kind with one value of another kind past the sample: the stored type
    and values equal the whole-file reading, for every ordered pair."""
    monkeypatch.setattr(csvread, "SAMPLE_BYTES", 2048)
    monkeypatch.setattr(csvread, "BLOCK_BYTES", 4096)
    lake = Lake(make_settings(str(tmp_path / "lake")))
    try:
        for a_index, a in enumerate(KIND_SAMPLES):
            for b in KIND_SAMPLES:
                body = ("i,v\n" + "".join(f"{i},{a}\n" for i in range(600)) + f"600,{b}\n").encode()
                schema, want = expected_table(body)
                lake.ingest_csv("pair", [body], mode="overwrite")
                stored = lake.catalog.find("pair")
                assert stored is not None
                assert stored.schema.field("v").type == normalize_schema(schema).field("v").type, (
                    a,
                    b,
                )
                got = lake.query("SELECT * FROM pair ORDER BY i").read_all().to_pylist()
                assert _same(got, want), (a_index, a, b)
    finally:
        lake.close()


# -- 5. a quote inside an unquoted field is data -----------------------------------------------
def test_stray_quote_is_data_over_flight_and_http(both: Both) -> None:
    body = b"name,height\nBob,5'11\"\nAl,6'0\n"
    for name in ingest_both_ways(both, "heights", body):
        for table in read_everywhere(both, f"SELECT name, height FROM {name} ORDER BY name"):
            assert table.to_pylist() == [
                {"name": "Al", "height": "6'0"},
                {"name": "Bob", "height": "5'11\""},
            ]


@pytest.mark.parametrize("line", [2, 3, 1000, 39_000, 79_999])
def test_stray_quotes_in_a_file_of_many_blocks(local: Both, line: int) -> None:
    lines = ["id,text,n"] + [f'{i},"q{i}, ""x""",{i}' for i in range(1, 80_000)]
    lines[line] = f"{line},5'11\" tall,{line}"
    if line > 3:
        lines[line // 2] = f'{line // 2},a"b""c,{line // 2}'
    body = ("\n".join(lines) + "\n").encode()
    assert len(body) > 2 * csvread.BLOCK_BYTES
    put_csv(local.flight.client, "stray", body, chunk=1 << 20)
    want = pacsv.read_csv(
        io.BytesIO(body),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=csvread.convert_options(),
    )
    got = flight_table(local.flight, "SELECT * FROM stray ORDER BY id")
    assert got.to_pylist() == want.sort_by("id").to_pylist()
    assert got.column("text")[line - 1].as_py() == "5'11\" tall"


def test_an_unclosed_quoted_field_is_refused(local: Both) -> None:
    body = b'a,b\nBob,5\'11""\n2,"never closed\n3,4\n'
    with pytest.raises(pa.ArrowInvalid, match="quoted field opened on line 3 is never closed"):
        put_csv(local.flight.client, "open", body)
    assert_clean(local.flight, "open")


# -- 6. bytes inside quoted fields are kept (CR LF at block edges) -----------------------------
def crlf_body(offset: int) -> tuple[bytes, str]:
    """A CSV whose quoted field has CR LF with the CR at byte ``offset``."""
    head = b'id,text\n1,a\n2,"'
    value = "x" * (offset - len(head)) + "\r\nafter"
    return head + value.encode() + b'"\n3,"\r\n"\n', value


def test_quoted_crlf_at_every_offset_around_small_blocks(tmp_path: Path, monkeypatch) -> None:
    block = 4096
    monkeypatch.setattr(csvread, "BLOCK_BYTES", block)
    lake = Lake(make_settings(str(tmp_path / "lake")))
    try:
        for edge in (block, 2 * block, 5 * block):
            for offset in range(edge - 8, edge + 9):
                body, value = crlf_body(offset)
                lake.ingest_csv("crlf", [body], mode="overwrite")
                got = lake.query("SELECT text FROM crlf ORDER BY id").read_all()
                assert got.column("text").to_pylist() == ["a", value, "\r\n"], offset
    finally:
        lake.close()


@pytest.mark.parametrize("delta", range(-4, 5))
def test_quoted_crlf_at_the_1_mib_block_edge_over_flight(both: Both, delta: int) -> None:
    if both.lake.settings.storage.startswith("s3://") and delta not in (-1, 0):
        pytest.skip("S3: the two offsets around the edge are enough")
    body, value = crlf_body(csvread.BLOCK_BYTES + delta)
    put_csv(both.flight.client, "edge", body, chunk=[1 << 20, 65_537, 333][abs(delta) % 3])
    got = flight_table(both.flight, "SELECT text FROM edge WHERE id = 2")
    assert got.column("text").to_pylist() == [value]


# -- 7. other encodings are refused by name ----------------------------------------------------
TEXT = "question,answer\nrange,10 \u2013 20\n"
ENCODINGS = [
    (TEXT.encode("utf-16"), "UTF-16"),
    (TEXT.encode("utf-16-le"), "NUL bytes"),
    (b"\xfe\xff" + TEXT.encode("utf-16-be"), "UTF-16 \\(big-endian\\)"),
    (b"\xff\xfe" + TEXT.encode("utf-16-le"), "UTF-16 \\(little-endian\\)"),
    (TEXT.encode("utf-32"), "UTF-32"),
    (b"\x00\x00\xfe\xff" + TEXT.encode("utf-32-be"), "UTF-32 \\(big-endian\\)"),
    (b"a,b\n1,x\x00y\n", "NUL bytes"),
    (b"a,b\n" + b"1,2\n" * 400_000 + b"3,\x00\n", "NUL bytes"),
    (TEXT.encode("cp1252", errors="replace").replace(b"?", b"\x96"), "not valid UTF-8"),
]


@pytest.mark.parametrize(("body", "message"), ENCODINGS)
def test_other_encodings_are_refused_naming_them(local: Both, body: bytes, message: str) -> None:
    with pytest.raises(pa.ArrowInvalid, match=message) as err:
        put_csv(local.flight.client, "enc", body)
    assert "Traceback" not in str(err.value) or "UTF" in message or "NUL" in message
    assert_clean(local.flight, "enc")
    response = http_ingest(local.http, "enc", body)
    assert response.status_code == 400
    import re

    assert re.search(message, response.json()["error"]), response.text
    assert list(local.lake.storage.list("data")) == []


def test_utf8_bom_is_still_fine(local: Both) -> None:
    put_csv(local.flight.client, "bom", "\ufeffa,b\n1,x\n".encode())
    assert flight_table(local.flight, "SELECT a, b FROM bom").to_pylist() == [{"a": 1, "b": "x"}]


def test_contradictions_are_a_conflict_on_append(local: Both) -> None:
    put_csv(local.flight.client, "app", b"id,code\n1,10\n")
    with pytest.raises(pa.ArrowException, match="code"):
        put_csv(local.flight.client, "app", b"id,code\n2,007\n")
    with pytest.raises(pa.ArrowException, match="'NA'"):
        put_csv(local.flight.client, "app", b"id,code\n3,NA\n")
    assert flight_table(local.flight, "SELECT count(*) AS n FROM app").to_pylist() == [{"n": 1}]


def test_in_process_errors_are_invalid_input(tmp_path: Path) -> None:
    lake = Lake(make_settings(str(tmp_path / "lake")))
    try:
        with pytest.raises(InvalidInput, match="UTF-16"):
            lake.ingest_csv("u", [TEXT.encode("utf-16")])
    finally:
        lake.close()


@pytest.mark.parametrize("chunk", [1, 3, 64, 65, 4099])
def test_the_spool_scan_sees_values_cut_by_upload_chunks(tmp_path: Path, chunk: int) -> None:
    """The bytes are scanned while they are spooled, in the upload's own chunks: a
    zero-padded number or a byte order mark cut across chunks is still seen."""
    body = b"n,t\n" + b"5,a\n" * 40 + b"00" + b"7,b\n" + b"6,c\n"
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    with csvbytes.spool(pieces, str(tmp_path)) as (path, size):
        assert size == len(body)
        assert csvbytes._SPOOLED[str(path)].suspect
    utf32 = TEXT.encode("utf-32")
    pieces = [utf32[i : i + chunk] for i in range(0, len(utf32), chunk)]
    lake = Lake(make_settings(str(tmp_path / "lake")))
    try:
        with pytest.raises(InvalidInput, match="UTF-32"):
            lake.ingest_csv("u32", pieces)
        lake.ingest_csv("z", [body[i : i + chunk] for i in range(0, len(body), chunk)])
        stored = lake.catalog.find("z")
        assert stored is not None
        assert stored.schema.field("n").type == pa.string()
    finally:
        lake.close()
