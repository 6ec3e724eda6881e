"""The ``flightlake`` command line (click): serve, ingest, sql, datasets, drop, gc,
versions, compact.

Client commands talk to a running server over Flight. Errors print one line to stderr and
exit 1 (no traceback unless --verbose).
"""

from __future__ import annotations

import array
import functools
import json
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

# Arrow's default memory pool is chosen once, when pyarrow loads: jemalloc, unless the
# environment already names one (why: flightlake.memory). Hence the imports below this line.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

import click
import pyarrow as pa
import pyarrow.flight as flight

from flightlake import __version__
from flightlake.errors import FlightlakeError

F = TypeVar("F", bound=Callable[..., Any])
CSV_CHUNK_BYTES = 1 << 20
CSV_BATCH_CHUNKS = 4
DEFAULT_SERVER = "grpc://127.0.0.1:8815"
#: What ``flightlake ingest`` retries: the server unavailable (overloaded, store down,
#: restarting) or the connection dropped (gRPC reports both as UNAVAILABLE).
TRANSIENT = (flight.FlightUnavailableError, ConnectionError)
RETRY_BACKOFF_SECONDS = 1.0  # doubled at each retry: 1, 2, 4, ...


def clean_message(exc: BaseException) -> str:
    """One line for a user: drop gRPC/Arrow detail and server tracebacks.

    A KeyError's str() is its message in quotes (``"'x'"``): its message is taken from its
    argument instead, so a message that ends in a quote keeps it (``unknown setting 'x'``).
    """
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    for marker in (". Detail:", ". gRPC client debug context", "\nDetail:"):
        text = text.split(marker, 1)[0]
    return " ".join(text.split()) or type(exc).__name__


def cli_errors(func: F) -> F:
    """Print one clear line and exit 1 on any error (traceback with --verbose)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (
            FlightlakeError,
            flight.FlightError,
            pa.ArrowException,
            OSError,
            ValueError,
            KeyError,
        ) as exc:
            if click.get_current_context().find_root().params.get("verbose"):
                # in full: a Flight server in this process sets sys.tracebacklimit to 0
                traceback.print_exc(limit=1000)
                sys.exit(1)
            click.echo(f"error: {clean_message(exc)}", err=True)
            sys.exit(1)

    return cast(F, wrapper)


@click.group()
@click.version_option(__version__, prog_name="flightlake")
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks and debug logs.")
def main(verbose: bool) -> None:
    """flightlake: push CSV or Arrow into a Parquet lake, query it with SQL over Flight."""
    if not verbose:
        # gRPC logs to stderr itself (e.g. "Failed to add port to server ..."), around the one
        # line the CLI prints; it reads this when it first starts, after this point.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")


# -- serve ---------------------------------------------------------------------------------
@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="TOML config file (default: conf/flightlake.toml when present).",
)
@click.option("--storage", help="Local folder or s3://BUCKET[/PREFIX].")
@click.option("--s3-endpoint", help="S3 endpoint URL, e.g. http://127.0.0.1:9000.")
@click.option("--host", help="Bind address (default 127.0.0.1).")
@click.option("--flight-port", type=int, help="Flight port (default 8815).")
@click.option("--http-port", type=int, help="HTTP port (default 3110; 0 disables).")
@click.option(
    "--workers", type=int, help="Server processes sharing the ports over one lake (default 1)."
)
@click.option("--tls-cert", help="PEM certificate for TLS.")
@click.option("--tls-key", help="PEM key for TLS.")
@click.option(
    "--insecure",
    is_flag=True,
    default=None,
    help="Allow a non-loopback --host with no tokens or users configured (no authentication).",
)
@click.option(
    "--create-bucket",
    "s3_create_bucket",
    is_flag=True,
    default=None,
    help="Create the s3:// storage bucket when it is missing (else serve refuses to start).",
)
@cli_errors
def serve(config_file: str | None, **flags: Any) -> None:
    """Run the Flight (and HTTP) server until interrupted."""
    from flightlake.app import run
    from flightlake.config import load_settings

    settings = load_settings(config_file, flags)
    verbose = bool(click.get_current_context().find_root().params.get("verbose"))
    run(settings, verbose=verbose)


# -- client commands -----------------------------------------------------------------------
@dataclass(frozen=True)
class Remote:
    """Where a client command connects and with which credentials."""

    server: str
    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: str | None = None

    def connect(self) -> tuple[flight.FlightClient, flight.FlightCallOptions]:
        """A client and the call options (authorization header) for every call."""
        if self.token and self.user:
            raise click.UsageError("give either --token or --user/--password, not both")
        if self.user and self.password is None:
            raise click.UsageError("--user needs --password (or FLIGHTLAKE_PASSWORD)")
        kwargs: dict[str, Any] = {}
        if self.tls_ca:
            kwargs["tls_root_certs"] = Path(self.tls_ca).read_bytes()
        client = flight.FlightClient(self.server, **kwargs)
        headers: list[tuple[bytes, bytes]] = []
        if self.token:
            headers.append((b"authorization", b"Bearer " + self.token.encode()))
        elif self.user:
            assert self.password is not None
            headers.append(client.authenticate_basic_token(self.user, self.password))
        return client, flight.FlightCallOptions(headers=headers)


def server_option(func: F) -> F:
    """--server and the credential / TLS options, handed to the command as ``remote``."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        server: str,
        token: str | None,
        user: str | None,
        password: str | None,
        tls_ca: str | None,
        **kwargs: Any,
    ) -> Any:
        return func(*args, remote=Remote(server, token, user, password, tls_ca), **kwargs)

    options = [
        click.option(
            "--server",
            default=lambda: os.environ.get("FLIGHTLAKE_SERVER", DEFAULT_SERVER),
            show_default=DEFAULT_SERVER,
            help="Flight server location, grpc:// or grpc+tls:// (env FLIGHTLAKE_SERVER).",
        ),
        click.option(
            "--token", envvar="FLIGHTLAKE_TOKEN", help="Bearer token (env FLIGHTLAKE_TOKEN)."
        ),
        click.option(
            "--user", envvar="FLIGHTLAKE_USER", help="Username, basic auth (env FLIGHTLAKE_USER)."
        ),
        click.option(
            "--password",
            envvar="FLIGHTLAKE_PASSWORD",
            help="Password for --user (env FLIGHTLAKE_PASSWORD).",
        ),
        click.option(
            "--tls-ca",
            envvar="FLIGHTLAKE_TLS_CA",
            type=click.Path(exists=True, dir_okay=False),
            help="PEM CA certificate to trust for a grpc+tls:// server (env FLIGHTLAKE_TLS_CA).",
        ),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return cast(F, wrapper)


def _file_format(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".arrow", ".arrows", ".ipc", ".feather"):
        return "arrow"
    return "csv"


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Dataset name.")
@click.option(
    "--mode",
    type=click.Choice(["append", "overwrite", "create"]),
    default="append",
    show_default=True,
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet", "arrow"]),
    help="Input format (default: from the file extension, else csv).",
)
@click.option(
    "--idempotency-key",
    "key",
    help="Key sent with the upload (default: a new random one per run); a retry with a "
    "key already committed for the dataset commits nothing and answers the first result.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 10),
    default=3,
    show_default=True,
    help="Retries, with backoff, when the server is unavailable or the connection drops.",
)
@server_option
@cli_errors
def ingest(
    file: Path,
    name: str,
    mode: str,
    fmt: str | None,
    key: str | None,
    retries: int,
    remote: Remote,
) -> None:
    """Stream FILE (CSV, Parquet or Arrow IPC) into dataset NAME.

    The upload carries an idempotency key, so retrying after a transient failure (the
    server UNAVAILABLE, a dropped connection) never lands the file twice.
    """
    fmt = _file_format(file, fmt)
    client, options = remote.connect()
    command = {
        "ingest": name,
        "format": "csv" if fmt == "csv" else "arrow",
        "mode": mode,
        "idempotency_key": key or f"cli-{uuid.uuid4().hex}",
    }
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
    for attempt in range(retries + 1):
        try:
            answer = _upload(client, options, descriptor, file, fmt, name)
            break
        except TRANSIENT as exc:
            if attempt == retries:
                raise
            wait = RETRY_BACKOFF_SECONDS * 2**attempt
            click.echo(
                f"warning: {clean_message(exc)}; retrying in {wait:g} s ({attempt + 1}/{retries})",
                err=True,
            )
            time.sleep(wait)
    result = json.loads(answer.to_pybytes()) if answer is not None else {}
    replay = " (already committed by an earlier attempt)" if result.get("replayed") else ""
    click.echo(
        f"{result.get('dataset', name)}: {result.get('rows_written', '?')} rows written "
        f"(version {result.get('version', '?')}){replay}"
    )


def _upload(
    client: flight.FlightClient,
    options: flight.FlightCallOptions,
    descriptor: flight.FlightDescriptor,
    file: Path,
    fmt: str,
    name: str,
) -> pa.Buffer | None:
    """One attempt: stream the whole file, return the server's PutResult metadata."""
    from tqdm import tqdm

    size = file.stat().st_size
    with tqdm(
        total=size, unit="B", unit_scale=True, desc=name, disable=not sys.stderr.isatty()
    ) as bar:
        if fmt == "csv":
            schema = pa.schema([("data", pa.binary())])
            writer, meta = client.do_put(descriptor, schema, options)
            with writer:
                for batch in _csv_batches(file, bar.update):
                    writer.write_batch(batch)
                writer.done_writing()
                answer: pa.Buffer | None = meta.read()
        else:
            reader = _arrow_source(file, fmt)
            writer, meta = client.do_put(descriptor, reader.schema, options)
            with writer:
                per_row = size / max(1, _row_estimate(file, fmt))
                for batch in reader:
                    writer.write_batch(batch)
                    bar.update(int(batch.num_rows * per_row))
                writer.done_writing()
                answer = meta.read()
    return answer


def _csv_batches(path: Path, progress: Callable[[int], Any]) -> Iterator[pa.RecordBatch]:
    """The file as batches of one binary column ``data``, CSV_CHUNK_BYTES per value."""
    with path.open("rb") as fh:
        while True:
            chunks = []
            for _ in range(CSV_BATCH_CHUNKS):
                chunk = fh.read(CSV_CHUNK_BYTES)
                if not chunk:
                    break
                chunks.append(chunk)
            if not chunks:
                return
            progress(sum(len(c) for c in chunks))
            yield pa.record_batch([binary_array(chunks)], names=["data"])


def binary_array(values: list[bytes]) -> pa.Array:
    """A binary array built from buffers: ``pa.array`` on Python objects would import pandas
    (a third of a second) just to check for pandas types."""
    offsets = array.array("i", [0])
    for value in values:
        offsets.append(offsets[-1] + len(value))
    data = pa.py_buffer(b"".join(values))
    return pa.Array.from_buffers(pa.binary(), len(values), [None, pa.py_buffer(offsets), data])


def _arrow_source(path: Path, fmt: str) -> pa.RecordBatchReader:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        return pa.RecordBatchReader.from_batches(
            pf.schema_arrow, pf.iter_batches(batch_size=65_536)
        )
    source = pa.memory_map(str(path))
    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        file_reader = pa.ipc.open_file(source)
        batches = (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
        return pa.RecordBatchReader.from_batches(file_reader.schema, batches)


def _row_estimate(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    return 0


@main.command()
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@server_option
@cli_errors
def sql(query: str, fmt: str, remote: Remote) -> None:
    """Run a SQL query and print the result."""
    client, options = remote.connect()
    reader = client.do_get(flight.Ticket(query.encode()), options)
    _print_stream(reader.to_reader(), fmt)


def _print_stream(reader: pa.RecordBatchReader, fmt: str) -> None:
    out = sys.stdout
    if fmt == "csv":
        import pyarrow.csv as pacsv

        sink = pa.BufferOutputStream()
        with pacsv.CSVWriter(sink, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
        out.write(sink.getvalue().to_pybytes().decode())
    elif fmt == "json":
        for batch in reader:
            for row in batch.to_pylist():
                out.write(json.dumps(row, default=str) + "\n")
    else:
        table = reader.read_all()
        click.echo(_render_table(table))


def _render_table(table: pa.Table, limit: int = 1000) -> str:
    names = table.column_names
    rows = [
        ["" if v is None else str(v) for v in r.values()] for r in table.slice(0, limit).to_pylist()
    ]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    line = "  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    shown = f", first {limit} shown" if table.num_rows > limit else ""
    tail = [f"({table.num_rows} rows{shown})"]
    return "\n".join([line, sep, *body, *tail])


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print manifests as JSON.")
@server_option
@cli_errors
def datasets(as_json: bool, remote: Remote) -> None:
    """List datasets."""
    client, options = remote.connect()
    body = json.dumps({"with_total": True}).encode()
    results = list(client.do_action(flight.Action("list", body), options))
    answer = json.loads(results[0].body.to_pybytes()) if results else []
    if isinstance(answer, list):  # a server before 0.2 answers the bare list
        answer = {"datasets": answer, "total": len(answer), "max_list": None}
    manifests = answer["datasets"]
    hidden = answer["total"] - len(manifests)
    footer = f"… {hidden} more not shown (max_list={answer['max_list']})" if hidden > 0 else ""
    if as_json:
        click.echo(json.dumps(manifests, indent=2))
        if footer:
            click.echo(footer, err=True)  # stdout stays JSON
        return
    table = pa.table(
        {
            "name": [m["name"] for m in manifests],
            "rows": [m["row_count"] for m in manifests],
            "bytes": [m["total_bytes"] for m in manifests],
            "version": [m["version"] for m in manifests],
            "updated_at": [m["updated_at"] for m in manifests],
        }
    )
    click.echo(_render_table(table))
    if footer:
        click.echo(footer)


@main.command()
@click.argument("name")
@server_option
@cli_errors
def drop(name: str, remote: Remote) -> None:
    """Drop dataset NAME."""
    client, options = remote.connect()
    list(client.do_action(flight.Action("drop", name.encode()), options))
    click.echo(f"dropped {name}")


@main.command()
@click.option("--grace", type=float, help="Only delete objects older than this (seconds).")
@server_option
@cli_errors
def gc(grace: float | None, remote: Remote) -> None:
    """Vacuum: delete files no retained version needs, and files of failed writes."""
    body = str(grace).encode() if grace is not None else b""
    client, options = remote.connect()
    results = list(client.do_action(flight.Action("gc", body), options))
    deleted = json.loads(results[0].body.to_pybytes())["deleted"] if results else []
    click.echo(f"deleted {len(deleted)} unreferenced objects")


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
@server_option
@cli_errors
def versions(name: str, as_json: bool, remote: Remote) -> None:
    """List the versions of dataset NAME, newest first (readable with AT (VERSION => N))."""
    client, options = remote.connect()
    results = list(client.do_action(flight.Action("versions", name.encode()), options))
    listed = json.loads(results[0].body.to_pybytes()) if results else []
    if as_json:
        click.echo(json.dumps(listed, indent=2))
        return
    columns = ("version", "timestamp", "operation", "rows_added", "rows_total")
    table = pa.table({c: ["" if v.get(c) is None else str(v[c]) for v in listed] for c in columns})
    click.echo(_render_table(table))


@main.command()
@click.argument("name")
@server_option
@cli_errors
def compact(name: str, remote: Remote) -> None:
    """Rewrite the small files of dataset NAME into large ones (answers unchanged)."""
    client, options = remote.connect()
    results = list(client.do_action(flight.Action("compact", name.encode()), options))
    out = json.loads(results[0].body.to_pybytes()) if results else {}
    click.echo(
        f"{name}: {out.get('files_before')} files -> {out.get('files_after')} "
        f"(version {out.get('version')})"
    )
