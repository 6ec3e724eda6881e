"""pandas and polars over plain Arrow Flight: write DataFrames in, read query results out.

    python clients/pandas_polars.py --server grpc://127.0.0.1:8815 [--name NAME]

Needs pyarrow, pandas and polars. DataFrames travel as Arrow record batches both ways, so no
CSV round trip and no type guessing: the dataset keeps the DataFrame's column types.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.flight as flight


def put_table(
    client: flight.FlightClient,
    options: flight.FlightCallOptions,
    name: str,
    table: pa.Table,
    mode: str,
) -> dict[str, object]:
    """Send an Arrow table to dataset ``name`` (mode append | overwrite | create)."""
    command = json.dumps({"ingest": name, "format": "arrow", "mode": mode}).encode()
    writer, metadata = client.do_put(
        flight.FlightDescriptor.for_command(command), table.schema, options
    )
    with writer:
        writer.write_table(table, max_chunksize=65_536)
        writer.done_writing()
        answer = metadata.read()
    return json.loads(answer.to_pybytes())


def query(client: flight.FlightClient, options: flight.FlightCallOptions, sql: str) -> pa.Table:
    """Run SQL; the result streams back as record batches."""
    return client.do_get(flight.Ticket(sql.encode()), options).read_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="grpc://127.0.0.1:8815", help="Flight location")
    parser.add_argument("--name", default="example_readings", help="dataset name")
    parser.add_argument(
        "--token",
        default=os.environ.get("FLIGHTLAKE_TOKEN"),
        help="bearer token (default: $FLIGHTLAKE_TOKEN)",
    )
    args = parser.parse_args()
    client = flight.connect(args.server)
    headers = [(b"authorization", f"Bearer {args.token}".encode())] if args.token else []
    options = flight.FlightCallOptions(headers=headers)

    # pandas -> flightlake: a DataFrame becomes an Arrow table (the index is left out).
    readings = pd.DataFrame(
        {
            "sensor": ["a", "a", "b", "b", "c"],
            "at": pd.to_datetime(
                [
                    "2024-05-01 10:00",
                    "2024-05-01 11:00",
                    "2024-05-01 10:00",
                    "2024-05-01 11:00",
                    "2024-05-01 10:00",
                ]
            ),
            "celsius": [21.5, 22.0, 19.0, 19.5, 25.25],
        }
    )
    table = pa.Table.from_pandas(readings, preserve_index=False)
    print("from pandas:", json.dumps(put_table(client, options, args.name, table, "overwrite")))

    # polars -> flightlake, appended. An append must match the dataset's column types
    # exactly (polars and pandas may pick other string / timestamp types), so cast to the
    # schema the server reports for the dataset.
    more = pl.DataFrame(
        {
            "sensor": ["c", "d"],
            "at": [datetime(2024, 5, 1, 11), datetime(2024, 5, 1, 10)],
            "celsius": [24.75, 18.0],
        }
    )
    schema = client.get_flight_info(flight.FlightDescriptor.for_path(args.name), options).schema
    appended = more.to_arrow().select(schema.names).cast(schema)
    print("from polars:", json.dumps(put_table(client, options, args.name, appended, "append")))

    sql = (
        f"SELECT sensor, count(*) AS n, avg(celsius) AS mean_c FROM {args.name} "
        f"GROUP BY sensor ORDER BY sensor"
    )

    # flightlake -> pandas
    df = query(client, options, sql).to_pandas()
    print("pandas result:")
    print(df.to_string(index=False))

    # flightlake -> polars (zero-copy from Arrow), then keep working in polars
    pdf = pl.from_arrow(query(client, options, f"SELECT * FROM {args.name}"))
    assert isinstance(pdf, pl.DataFrame)
    hottest = pdf.sort("celsius", descending=True).head(1).row(0, named=True)
    print(f"polars: {pdf.height} rows; hottest reading {hottest['celsius']} on {hottest['sensor']}")
    client.close()


if __name__ == "__main__":
    main()
