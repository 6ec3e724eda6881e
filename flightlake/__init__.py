"""flightlake: an Arrow Flight data server over a Parquet lake (S3 or local disk)."""

__version__ = "0.1.0"
