"""A query result made ready for a page: the first rows as text, the rest counted, a chart.

The rows past the display cap are read and counted, never kept, so memory stays bounded by
the cap whatever the result's size. A chart is offered when the result has exactly one text
or date/time column and one or more numeric columns: bars for text labels, lines for dates.
Its geometry is computed here and drawn as inline SVG by the template (no script, no CDN).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.types as pat

from flightlake.lake import Lake

DISPLAY_ROWS = 500  # rows a result table shows; the rest are counted
CELL_CHARS = 300  # characters one cell shows before it is cut with "..."
CHART_POINTS = 60  # labels (bars or line points) a chart draws at most
CHART_SERIES = 6  # numeric columns a chart draws at most


@dataclass
class Series:
    name: str
    css: str  # series-0 .. series-5: the colour comes from console.css
    points: str = ""  # "x,y x,y ...": the polyline of a line chart
    bars: list[tuple[float, float, float, float, str]] = field(default_factory=list)
    # (x, y, width, height, title) per bar of a bar chart


@dataclass
class Chart:
    """An SVG chart's geometry in view-box units (WIDTH x HEIGHT)."""

    kind: str  # "bar" | "line"
    label: str  # the label column's name
    series: list[Series]
    ticks: list[tuple[float, str]]  # (y, text) of the value axis
    labels: list[tuple[float, str]]  # (x, text) of the label axis
    zero: float  # the y of value 0 (or of the axis' bottom)
    points_shown: int
    points_total: int

    WIDTH = 760
    HEIGHT = 320
    LEFT = 64
    RIGHT = 16
    TOP = 16
    BOTTOM = 56


@dataclass
class Result:
    """What a page shows of one query: column names and types, the first rows as text (None
    for NULL), how many rows were not shown, the time taken, and maybe a chart."""

    columns: list[str]
    types: list[str]
    rows: list[list[str | None]]
    more: int
    seconds: float
    chart: Chart | None

    @property
    def total(self) -> int:
        return len(self.rows) + self.more


def run_query(lake: Lake, sql: str, cap: int = DISPLAY_ROWS, count_rest: bool = True) -> Result:
    """Run ``sql`` through ``lake.query`` (its sandbox and timeout) and keep ``cap`` rows.

    With ``count_rest`` the remaining rows are read and counted (streamed, not kept).
    Raises what ``Lake.query`` raises (QueryError with the engine's message, Unavailable).
    """
    start = time.perf_counter()
    reader = lake.query(sql)
    kept: list[pa.RecordBatch] = []
    held = more = 0
    try:
        for batch in reader:
            if held < cap:
                piece = batch.slice(0, cap - held)
                kept.append(piece)
                held += piece.num_rows
                more += batch.num_rows - piece.num_rows
            elif count_rest:
                more += batch.num_rows
            else:
                break
    finally:
        reader.close()
    seconds = time.perf_counter() - start
    schema = reader.schema
    table = pa.Table.from_batches(kept, schema=schema)
    columns = [list(map(cell_text, col.to_pylist())) for col in table.columns]
    rows = [list(row) for row in zip(*columns, strict=True)] if columns else []
    return Result(
        columns=list(schema.names),
        types=[str(f.type) for f in schema],
        rows=rows,
        more=more,
        seconds=seconds,
        chart=chart_of(table),
    )


def cell_text(value: Any) -> str | None:
    """One value as the text a table cell shows (None for NULL); long text is cut."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, bytes):
        text = base64.b64encode(value[:CELL_CHARS]).decode()
    elif isinstance(value, dt.datetime | dt.date | dt.time):
        text = value.isoformat()
    else:
        text = str(value)
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 3] + "..."


# -- chart -----------------------------------------------------------------------------------
def _is_label(dtype: pa.DataType) -> bool:
    return bool(
        pat.is_string(dtype)
        or pat.is_large_string(dtype)
        or pat.is_string_view(dtype)
        or (pat.is_temporal(dtype) and not pat.is_duration(dtype) and not pat.is_interval(dtype))
    )


def _is_number(dtype: pa.DataType) -> bool:
    return bool(pat.is_integer(dtype) or pat.is_floating(dtype) or pat.is_decimal(dtype))


def _number(value: Any) -> float | None:
    if isinstance(value, int | float | decimal.Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def chart_of(table: pa.Table) -> Chart | None:
    """A chart of ``table`` when it has one label column and one or more numeric columns."""
    labels = [i for i, f in enumerate(table.schema) if _is_label(f.type)]
    numbers = [i for i, f in enumerate(table.schema) if _is_number(f.type)]
    if len(labels) != 1 or not numbers or len(labels) + len(numbers) != table.num_columns:
        return None
    if table.num_rows == 0:
        return None
    label_field = table.schema.field(labels[0])
    shown = min(table.num_rows, CHART_POINTS)
    texts = [cell_text(v) or "NULL" for v in table.column(labels[0]).to_pylist()[:shown]]
    series_cols = numbers[:CHART_SERIES]
    values = [[_number(v) for v in table.column(i).to_pylist()[:shown]] for i in series_cols]
    finite = [v for column in values for v in column if v is not None]
    if not finite:
        return None
    low, high = min(0.0, *finite), max(0.0, *finite)
    ticks_at = _nice_ticks(low, high)
    low, high = min(low, ticks_at[0]), max(high, ticks_at[-1])
    span = (high - low) or 1.0
    plot_w = Chart.WIDTH - Chart.LEFT - Chart.RIGHT
    plot_h = Chart.HEIGHT - Chart.TOP - Chart.BOTTOM

    def y_of(value: float) -> float:
        return round(Chart.TOP + plot_h * (high - value) / span, 2)

    kind = "line" if pat.is_temporal(label_field.type) and shown > 1 else "bar"
    step = plot_w / shown
    every = max(1, math.ceil(shown / 12))  # at most about 12 label texts
    label_marks = [
        (round(Chart.LEFT + step * (i + 0.5), 2), _short(texts[i])) for i in range(0, shown, every)
    ]
    series: list[Series] = []
    for n, (col, column) in enumerate(zip(series_cols, values, strict=True)):
        one = Series(table.schema.field(col).name, f"series-{n}")
        if kind == "line":
            one.points = " ".join(
                f"{round(Chart.LEFT + step * (i + 0.5), 2)},{y_of(v)}"
                for i, v in enumerate(column)
                if v is not None
            )
        else:
            width = step * 0.8 / len(series_cols)
            for i, v in enumerate(column):
                if v is None:
                    continue
                x = Chart.LEFT + step * (i + 0.1) + width * n
                top, bottom = sorted((y_of(v), y_of(0.0)))
                title = f"{texts[i]}: {one.name} = {_number_text(v)}"
                one.bars.append((round(x, 2), top, round(width, 2), round(bottom - top, 2), title))
        series.append(one)
    return Chart(
        kind=kind,
        label=label_field.name,
        series=series,
        ticks=[(y_of(t), _number_text(t)) for t in ticks_at],
        labels=label_marks,
        zero=y_of(0.0),
        points_shown=shown,
        points_total=table.num_rows,
    )


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values covering [low, high] (steps of 1, 2 or 5 x 10^k)."""
    if high == low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks: list[float] = []
    value = first
    while value < high + step / 2 and len(ticks) < 3 * count:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _number_text(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.6g}"


def _short(text: str, limit: int = 14) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
