"""Ingest a CSV, list the datasets and query them with plain `pyarrow.flight`.

    python clients/pyarrow_flight.py --server grpc://127.0.0.1:8815 [--csv FILE] [--name NAME]

Needs only pyarrow. The CSV is streamed to the server in 1 MiB pieces (the server infers the
schema), so a file of any size works. See docs/protocol.md for the descriptors, tickets and
actions used here.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight

SAMPLE_CSV = Path(__file__).resolve().parent / "data" / "sales.csv"
CHUNK_BYTES = 1 << 20
#: the columns of data/sales.csv that steps 5 and 6 ask about; any other CSV gets generic SQL
SALES_COLUMNS = {"state", "quantity", "unit_price", "order_date"}


def quote(name: str) -> str:
    """A SQL identifier: any column or dataset name, quoted."""
    return '"' + name.replace('"', '""') + '"'


def call_options(token: str | None) -> flight.FlightCallOptions:
    """Per-call options: a bearer token when the server has tokens configured."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return flight.FlightCallOptions(headers=headers)


def csv_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """The file's bytes, in order, as record batches of one binary column `data`."""
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            yield pa.record_batch([pa.array([chunk], pa.binary())], names=["data"])


def ingest_csv(
    client: flight.FlightClient,
    options: flight.FlightCallOptions,
    path: Path,
    name: str,
    mode: str,
) -> dict[str, object]:
    """do_put with the JSON ingest command; returns the server's PutResult metadata."""
    command = {"ingest": name, "format": "csv", "mode": mode}
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
    writer, metadata = client.do_put(descriptor, pa.schema([("data", pa.binary())]), options)
    with writer:
        for batch in csv_batches(path):
            writer.write_batch(batch)
        writer.done_writing()
        answer = metadata.read()  # one PutResult: {"dataset", "rows_written", "version"}
    return json.loads(answer.to_pybytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="grpc://127.0.0.1:8815", help="Flight location")
    parser.add_argument("--csv", type=Path, default=SAMPLE_CSV, help="CSV file to ingest")
    parser.add_argument("--name", default="example_sales", help="dataset name")
    parser.add_argument("--mode", default="overwrite", choices=["append", "overwrite", "create"])
    parser.add_argument(
        "--token",
        default=os.environ.get("FLIGHTLAKE_TOKEN"),
        help="bearer token (default: $FLIGHTLAKE_TOKEN)",
    )
    args = parser.parse_args()

    client = flight.connect(args.server)
    options = call_options(args.token)

    # 1. Is the server up? Actions take and return JSON.
    health = next(client.do_action(flight.Action("health", b""), options))
    print("health:", health.body.to_pybytes().decode())

    # 2. Ingest the CSV.
    result = ingest_csv(client, options, args.csv, args.name, args.mode)
    print("ingested:", json.dumps(result))

    # 3. The catalog: one FlightInfo per dataset.
    print("datasets:")
    for info in client.list_flights(b"", options):
        name = info.descriptor.path[0].decode()
        print(
            f"  {name}: {info.total_records} rows, {info.total_bytes} bytes, "
            f"columns {', '.join(info.schema.names)}"
        )

    # 4. Read a whole dataset through the ticket its FlightInfo hands out.
    info = client.get_flight_info(flight.FlightDescriptor.for_path(args.name), options)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    print(f"read {args.name}: {table.num_rows} rows, schema {table.schema}".replace("\n", "; "))

    # 5. SQL: a ticket that is plain SQL text runs it; the answer streams as record batches.
    #    The sample's own question when the file has its columns, else rows per first column.
    dataset, columns = quote(args.name), table.schema.names
    if set(columns) >= SALES_COLUMNS:
        sql = (
            f"SELECT state, count(*) AS orders, sum(quantity * unit_price) AS revenue "
            f"FROM {dataset} GROUP BY state ORDER BY state"
        )
        reader = client.do_get(flight.Ticket(sql.encode()), options)
        print("revenue by state:")
        for row in reader.read_all().to_pylist():
            print(f"  {row['state']}: {row['orders']} orders, {row['revenue']:.2f}")
        last_sql = f"SELECT max(order_date) AS last FROM {dataset}"
    else:
        first = quote(columns[0])
        sql = (
            f"SELECT {first} AS value, count(*) AS n FROM {dataset} "
            f"GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5"
        )
        reader = client.do_get(flight.Ticket(sql.encode()), options)
        print(f"most frequent values of {columns[0]}:")
        for row in reader.read_all().to_pylist():
            print(f"  {row['value']}: {row['n']} rows")
        last_sql = f"SELECT max({first}) AS last FROM {dataset}"

    # 6. Or ask for the result schema first, then fetch from the endpoint it returns.
    info = client.get_flight_info(flight.FlightDescriptor.for_command(last_sql), options)
    print("result schema:", info.schema.to_string().replace("\n", "; "))
    last = client.do_get(info.endpoints[0].ticket, options).read_all().column("last")[0]
    print("last order:" if "order_date" in last_sql else f"largest {columns[0]}:", last)

    # 7. Errors carry gRPC codes, which pyarrow raises as Arrow exceptions: an unknown
    #    dataset is NOT_FOUND (pa.ArrowKeyError), bad SQL is INVALID_ARGUMENT (pa.ArrowInvalid).
    try:
        client.get_flight_info(flight.FlightDescriptor.for_path("no_such_dataset"), options)
    except pa.ArrowKeyError:
        print("unknown dataset -> NOT_FOUND")
    try:
        client.do_get(flight.Ticket(b"SELEKT 1"), options).read_all()
    except pa.ArrowInvalid:
        print("bad SQL -> INVALID_ARGUMENT")
    client.close()


if __name__ == "__main__":
    main()
