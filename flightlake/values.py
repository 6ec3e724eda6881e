"""What setting values look like: memory sizes as DuckDB reads them, storage roots, S3
endpoints and regions, bind hosts. Each ``check_*`` returns None for a good value and
otherwise what is allowed, the way ``config.Setting.check`` wants; config.py declares which
setting uses which.
"""

from __future__ import annotations

import ipaddress
import os
import re

#: DuckDB's memory units (1000^i, 1024^i and their words), as its SET memory_limit reads them
_SIZE_UNITS = {
    "b": 1, "byte": 1, "bytes": 1,
    "k": 10**3, "kb": 10**3, "kilobyte": 10**3, "kilobytes": 10**3, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "megabyte": 10**6, "megabytes": 10**6, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gigabyte": 10**9, "gigabytes": 10**9, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "terabyte": 10**12, "terabytes": 10**12, "tib": 2**40,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*|%)\s*$", re.IGNORECASE | re.ASCII)
#: a floor with room: at 1MB DuckDB 1.5.5 fails a 3M-row group-by (a 2 MiB allocation), 8MB ran it
MIN_MEMORY_BYTES = 16 * 10**6
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def url_host(host: str) -> str:
    """``host`` as it sits in a URI: an IPv6 address in brackets (``[::1]``), else as is."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def physical_memory_bytes() -> int:
    """This machine's RAM in bytes (sysconf), what a percentage memory limit is taken of."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def parse_size(text: str) -> int:
    """Bytes in a memory size as DuckDB reads them: ``2GB`` (1000^3), ``500MiB`` (1024^2),
    ``1.5 gigabytes``; or ``80%`` of physical memory (DuckDB 1.5 itself refuses ``%``).

    Raises ValueError for anything else (no unit, an unknown unit, zero).
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(text)
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit == "%":
        if not 0 < number <= 100:
            raise ValueError(text)
        return int(physical_memory_bytes() * number / 100)
    if unit not in _SIZE_UNITS or number <= 0:
        raise ValueError(text)
    return int(number * _SIZE_UNITS[unit])


def parse_bytes(text: str) -> int:
    """A byte count as a ``*_bytes`` setting reads it: an integer (``536870912``,
    ``268_435_456``: ``_`` only between digits, as in TOML) or a number with one of
    DuckDB's units as ``parse_size`` reads it (``512MiB``, ``2GB``, ``1.5GiB``, ``0MiB``),
    never a percentage. Raises ValueError for anything else."""
    if re.search(r"_(?![0-9])|(?<![0-9])_", text):
        raise ValueError(text)
    match = _SIZE.match(text.replace("_", ""))
    if not match:
        raise ValueError(text)
    number, unit = float(match.group(1)), match.group(2).lower() or "b"
    if unit not in _SIZE_UNITS:
        raise ValueError(text)
    return int(number * _SIZE_UNITS[unit])


def check_memory_limit(value: str) -> str | None:
    try:
        size = parse_size(value)
    except ValueError:
        return "a size such as 2GB, 500MiB or 1.5GB (KB/MB/GB/TB or KiB/MiB/GiB/TiB), or 80%"
    if size < MIN_MEMORY_BYTES:
        return f"at least {MIN_MEMORY_BYTES // 10**6}MB"
    return None


def check_storage(value: str) -> str | None:
    if value.startswith("s3://"):
        bucket = value[5:].split("/", 1)[0]
        if not _BUCKET.match(bucket):
            return "s3://BUCKET[/PREFIX] with a bucket name of 3-63 characters a-z 0-9 . -"
        return None
    if not value.strip() or "://" in value:
        return "a local folder, or s3://BUCKET[/PREFIX]"
    return None


def check_endpoint(value: str) -> str | None:
    if value and not re.match(r"^https?://[^/\s]+/?$", value):
        return "empty (AWS), or http://HOST[:PORT] or https://HOST[:PORT]"
    return None


def check_host(value: str) -> str | None:
    bare = value.strip("[]")
    try:
        ipaddress.ip_address(bare)
        return None
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        return "an IP address (127.0.0.1, ::1, 0.0.0.0) or a host name"
    return None


def check_region(value: str) -> str | None:
    return None if re.match(r"^[a-z0-9-]+$", value) else "a region name such as us-east-1"
