"""ADBC over Flight SQL: bulk ingest, then pandas and polars queries through the same driver.

    python clients/adbc.py --server grpc://127.0.0.1:8815 [--name NAME]

Needs adbc-driver-flightsql (which brings adbc-driver-manager), pyarrow, pandas and polars.
Flight SQL is served on the same port as plain Flight. Any ADBC or JDBC Flight SQL client
connects the same way: `grpc://HOST:8815` (`grpc+tls://` when the server has TLS).
"""

from __future__ import annotations

import argparse
import os
from datetime import date

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi
import pandas as pd
import polars as pl
import pyarrow as pa


def connect(server: str, token: str | None) -> adbc_driver_flightsql.dbapi.Connection:
    """A DB-API connection. ``autocommit=True``: flightlake has no transactions, each ingest
    commits on its own."""
    db_kwargs = {}
    if token:
        db_kwargs[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = (
            f"Bearer {token}"
        )
    return adbc_driver_flightsql.dbapi.connect(server, db_kwargs=db_kwargs, autocommit=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="grpc://127.0.0.1:8815", help="Flight SQL location")
    parser.add_argument("--name", default="example_trips", help="dataset name")
    parser.add_argument(
        "--token",
        default=os.environ.get("FLIGHTLAKE_TOKEN"),
        help="bearer token (default: $FLIGHTLAKE_TOKEN)",
    )
    args = parser.parse_args()

    trips = pa.table(
        {
            "trip_id": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
            "day": pa.array([date(2024, 6, d) for d in (1, 1, 1, 2, 2, 3)], pa.date32()),
            "city": ["Chicago", "Chicago", "Austin", "Chicago", "Austin", "Boston"],
            "km": [3.2, 11.0, 5.5, 7.3, 2.0, 9.9],
        }
    )

    with connect(args.server, args.token) as conn:
        # Bulk ingest (Flight SQL CommandStatementIngest). mode: "create" fails if the
        # dataset exists, "append" needs it, "create_append" does either, "replace"
        # overwrites it.
        with conn.cursor() as cur:
            rows = cur.adbc_ingest(args.name, trips, mode="replace")
            print(f"adbc_ingest: {rows} rows into {args.name}")
            more = trips.slice(0, 2).set_column(0, "trip_id", pa.array([7, 8], pa.int64()))
            rows = cur.adbc_ingest(args.name, more, mode="append")
            print(f"adbc_ingest: {rows} more rows appended")

        # DB-API: execute, then fetch rows or (better) Arrow.
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) AS n, round(sum(km), 1) AS km FROM {args.name}")
            print("dbapi:", cur.fetchone())
            cur.execute(f"SELECT * FROM {args.name} WHERE city = ? ORDER BY trip_id", ["Austin"])
            print("parameters:", cur.fetch_arrow_table().column("trip_id").to_pylist())

        # pandas accepts an ADBC connection directly.
        df = pd.read_sql(
            f"SELECT city, count(*) AS trips, sum(km) AS km FROM {args.name} "
            f"GROUP BY city ORDER BY city",
            conn,
        )
        print("pandas.read_sql:")
        print(df.to_string(index=False))

        # polars too. (polars.read_database_uri picks the ADBC driver from the URI scheme,
        # and `grpc://` names no driver, so open the connection yourself as here.)
        pdf = pl.read_database(
            f"SELECT day, sum(km) AS km FROM {args.name} GROUP BY day ORDER BY day",
            connection=conn,
        )
        print("polars.read_database:")
        for day, km in pdf.iter_rows():
            print(f"  {day}: {km:.1f} km")


if __name__ == "__main__":
    main()
