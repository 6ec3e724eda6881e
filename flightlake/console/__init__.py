"""The web console: a browser front end on the HTTP port, over the same Lake as /v1 and Flight.

    GET  /                      every dataset (rows, size, version, last update)
    GET  /datasets/{name}       schema, versions and the first 100 rows of one dataset
    GET  /sql?sql=...           the SQL form; with ``sql``, its result (table, chart, downloads)
    GET  /sql/download?sql=&format=csv|arrow|parquet   the full result, streamed
    GET  /upload                the upload form (write role only)
    POST /upload                multipart ``csrf``, ``name``, ``mode``, ``file`` -> ingest
    GET  /login, POST /login    sign-in (only when tokens or users are configured)
    POST /logout                sign-out
    GET  /static/...            the console's own CSS, JS and vendored htmx

Pages are rendered on the server (Jinja2, autoescape on) and work as plain HTML forms;
htmx (vendored, static/htmx.min.js) swaps results in place and reports upload progress.
Handlers call the Lake and the shared HTTP pieces (``http_upload``, result encoding) only.
"""

from flightlake.console.routes import console_routes

__all__ = ["console_routes"]
