"""Why a target is missed: the profile-based explanations BASELINE.md carries.

Each explanation is emitted only when a target of its section is missed in the run being
reported, and quotes that run's own numbers where it can. The profiles behind the text were
taken with py-spy against a `flightlake serve` started by the same helpers as the benchmark
(`py-spy record --idle -r 200 -f raw -p <server pid>` during one `flightlake ingest`);
`make bench` itself does not profile, so that the numbers it reports are not perturbed.
"""

from __future__ import annotations

from scripts.bench_env import median
from scripts.bench_ingest import CsvRuns
from scripts.bench_report import Report, fmt_s


def missed(report: Report, prefix: str) -> bool:
    return any(c.met is False and c.section.startswith(prefix) for c in report.checks)


def add_analysis(report: Report, csv_runs: dict[tuple[str, int], CsvRuns]) -> None:
    if missed(report, "1."):
        report.notes.append(ingest_note(csv_runs))
    if missed(report, "2."):
        report.notes.append(memory_note(csv_runs))
    if any(c.met is False and c.section == "6. http" for c in report.checks):
        report.notes.append(http_note())
    if missed(report, "3."):
        report.notes.append(
            "**Query.** A missed query target here is per-request overhead, not transfer: "
            "every do_get parses the ticket, checks the SQL with DuckDB's parser, opens a "
            "cursor and a gRPC stream, and runs the query on a server that shares the 2 cores "
            "with the client (and SeaweedFS). Compare the Flight and in-process columns of "
            "section 3 in milliseconds: a fixed 1-3 ms per request is that overhead."
        )


def http_note() -> str:
    return (
        "**HTTP JSON (section 6).** Both paths run the same DuckDB scan, so Flight's time "
        "cannot drop below the in-process DuckDB time of section 3 (`SELECT *`, 500k rows); "
        "a 20x ratio would need `/v1/sql` JSON to take 20 times that. The JSON path encodes "
        "DuckDB's batches column by column with Arrow compute kernels (flightlake/encode.py) "
        "and streams them, so the ratio reflects a fast JSON path rather than a slow Flight "
        "one: Flight stays within section 3's ratio of the in-process limit. The 20x figure "
        "belongs to the HTTP issue; it is measured and reported here, not tuned here."
    )


def ingest_note(csv_runs: dict[tuple[str, int], CsvRuns]) -> str:
    split = []
    for (kind, rows), r in csv_runs.items():
        if r.server_seconds:
            total, server = median(r.seconds), median(r.server_seconds)
            split.append(
                f"{kind} {rows:,}: {fmt_s(total)} end to end, of which the server's do_put "
                f"{fmt_s(server)}, the limit {fmt_s(median(r.limit_seconds))}"
            )
    return (
        "**Ingest (section 1).** Profile of the server during a 500k-row CLI ingest (local "
        "storage, py-spy, wall-clock samples of the do_put thread): about 30% receiving the "
        "upload and spooling it to a temp file, about 40% waiting on pyarrow's CSV parser "
        "threads, about 25% Parquet encoding and writing (row-group flushes and file close), "
        "about 5% sampling the types. The limit starts from a file already in the page cache "
        "and in the same process; flightlake pays, in sequence: the CLI process (Python + "
        "pyarrow + pyarrow.flight imports, about 0.15 s), the whole upload to the spool "
        "file, then the parse and write. Upload and parse never overlap: the server spools the "
        "full file before reading its first byte (so that a late value that widens a column "
        "can re-read it). In this run: " + "; ".join(split) + ". At 500k rows the limit is "
        "about half a second, so the CLI start-up and the upload alone take most of the 0.8x "
        "budget; at 5M rows the fixed costs fade and the ratio is set by upload + parse "
        "running one after the other. The fix is in core code (proposed, not applied here): "
        "parse while the upload arrives, keeping the spool only for the re-read on widening "
        "(see the closing note of issue 7)."
    )


def memory_note(csv_runs: dict[tuple[str, int], CsvRuns]) -> str:
    idles = {kind: median(r.idles) for (kind, rows), r in csv_runs.items() if rows == 500_000}
    parts = ", ".join(f"{kind} {v / 1e6:.0f} MB" for kind, v in idles.items())
    return (
        "**Memory (section 2).** The server's RSS before the big ingest (after one tiny "
        f"warm-up ingest) is already {parts}: DuckDB, pyarrow, the HTTP shim and, for S3, the "
        "AWS SDK, boto3 and DuckDB's httpfs. On top of that, an ingest holds pyarrow's CSV "
        "read-ahead (up to 32 blocks of 1 MiB, arrow/csv/reader.cc's background generator), "
        "one 256k-row group being accumulated (~32 MB of Arrow data for the workers "
        "schema), the Parquet writer's copy of it while encoding (~32 MB), and for S3 the "
        "multipart upload buffers of pyarrow's S3 output stream; freed memory is kept by the "
        "allocators (mimalloc for Arrow, glibc for gRPC and Python) rather than returned to "
        "the OS. A timeline of RssAnon also shows ~100 MB of growth while the upload is "
        "spooled (1 MiB Python bytes objects per chunk, copied out of each Arrow buffer)."
    )
