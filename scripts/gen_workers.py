"""Generate the deterministic `workers` CSV used by the G0 gate, tests and benchmarks.

    python -m scripts.gen_workers workers_500k.csv --rows 500000 [--seed 42]

The same (rows, seed) always gives the same bytes. About 2% of `phone`, 1% of
`city` and 1% of `email` values are empty, so loaders must cope with nulls.
`il_role_counts` recomputes the gate's `GROUP BY role WHERE state='IL'` answer
with the csv module alone, as an independent oracle for the SQL path.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

HEADER = (
    "worker_id",
    "first_name",
    "last_name",
    "role",
    "state",
    "city",
    "hourly_rate",
    "hire_date",
    "active",
    "email",
    "phone",
)

FIRST_NAMES = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda",
    "David", "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
    "Thomas", "Sarah", "Carlos", "Maria", "Wei", "Aisha", "Dmitri", "Priya",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas",
    "Taylor", "Moore", "Jackson", "Martin", "Lee", "Nguyen", "Patel", "Kowalski", "Okafor",
)  # fmt: skip
ROLES = (
    "electrician", "plumber", "carpenter", "welder",
    "mechanic", "painter", "roofer", "hvac_technician",
)  # fmt: skip
CITIES: dict[str, tuple[str, ...]] = {
    "AZ": ("Phoenix", "Tucson", "Mesa"),
    "CA": ("Los Angeles", "San Diego", "San Jose", "Fresno"),
    "CO": ("Denver", "Colorado Springs", "Aurora"),
    "FL": ("Miami", "Orlando", "Tampa", "Jacksonville"),
    "GA": ("Atlanta", "Savannah", "Augusta"),
    "IL": ("Chicago", "Springfield", "Naperville", "Peoria", "Rockford"),
    "MA": ("Boston", "Worcester", "Cambridge"),
    "MI": ("Detroit", "Grand Rapids", "Lansing"),
    "NC": ("Charlotte", "Raleigh", "Durham"),
    "NY": ("New York", "Buffalo", "Rochester", "Albany"),
    "OH": ("Columbus", "Cleveland", "Cincinnati"),
    "PA": ("Philadelphia", "Pittsburgh", "Allentown"),
    "TX": ("Houston", "Dallas", "Austin", "San Antonio"),
    "WA": ("Seattle", "Spokane", "Tacoma"),
    "WI": ("Milwaukee", "Madison", "Green Bay"),
}
STATES = tuple(CITIES)

EMPTY_PHONE, EMPTY_CITY, EMPTY_EMAIL = 0.02, 0.01, 0.01
RATE_CENTS = (1500, 9500)  # hourly_rate from 15.00 to 95.00
HIRE_START, HIRE_DAYS = dt.date(2005, 1, 1), 20 * 365
CHUNK_ROWS = 10_000


def _rows(start: int, stop: int, rng: random.Random, dates: Sequence[str]) -> list[list[str]]:
    """Build rows worker_id in [start, stop) from `rng`, in a fixed draw order."""
    rows = []
    rand, choice, randrange = rng.random, rng.choice, rng.randrange
    for worker_id in range(start, stop):
        first, last = choice(FIRST_NAMES), choice(LAST_NAMES)
        state = choice(STATES)
        city = choice(CITIES[state])
        cents = randrange(RATE_CENTS[0], RATE_CENTS[1] + 1)
        phone = f"555-{randrange(100, 1000)}-{randrange(10000):04d}"
        rows.append(
            [
                str(worker_id),
                first,
                last,
                choice(ROLES),
                state,
                "" if rand() < EMPTY_CITY else city,
                f"{cents // 100}.{cents % 100:02d}",
                choice(dates),
                "true" if rand() < 0.85 else "false",
                "" if rand() < EMPTY_EMAIL else f"{first}.{last}{worker_id}@example.com".lower(),
                "" if rand() < EMPTY_PHONE else phone,
            ]
        )
    return rows


def write_workers_csv(path: str | Path, rows: int, seed: int = 42) -> Path:
    """Write `rows` workers (ids 1..rows) to `path` as CSV with a header; return the path."""
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    path = Path(path)
    rng = random.Random(seed)
    dates = [(HIRE_START + dt.timedelta(days=d)).isoformat() for d in range(HIRE_DAYS)]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        for start in range(1, rows + 1, CHUNK_ROWS):
            writer.writerows(_rows(start, min(start + CHUNK_ROWS, rows + 1), rng, dates))
    return path


def il_role_counts(path: str | Path) -> dict[str, int]:
    """Count rows per role where state == 'IL', read with the csv module only."""
    counts: Counter[str] = Counter()
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        state, role = header.index("state"), header.index("role")
        for row in reader:
            if row[state] == "IL":
                counts[row[role]] += 1
    return dict(sorted(counts.items()))


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write the CSV and print a one-line summary."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.gen_workers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", type=Path, help="the CSV file to write")
    parser.add_argument("--rows", type=int, default=500_000, help="rows to write (500000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (42)")
    args = parser.parse_args(argv)
    path = write_workers_csv(args.out, args.rows, args.seed)
    print(f"wrote {args.rows} rows to {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
