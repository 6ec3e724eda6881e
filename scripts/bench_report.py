"""Benchmark results: sections of tables, the checked targets, and their rendering.

Every section appends Markdown tables to a `Report`; every target becomes a `Check` (a
ratio against the limit measured in the same run, the target, met or missed). The report
renders to the console (summary) and to docs/BASELINE.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Check:
    """One target: what was compared, the measured ratio, the target and the verdict."""

    section: str
    what: str
    ratio: str
    target: str
    met: bool | None  # None: informational, no target

    @property
    def verdict(self) -> str:
        return {True: "met", False: "**missed**", None: "-"}[self.met]


@dataclass
class Section:
    title: str
    intro: str = ""
    blocks: list[str] = field(default_factory=list)


@dataclass
class Report:
    facts: dict[str, str]
    command: str
    quick: bool
    sections: list[Section] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    loads: list[tuple[str, float]] = field(default_factory=list)

    def section(self, title: str, intro: str = "") -> Section:
        sec = Section(title, intro)
        self.sections.append(sec)
        return sec

    def check(self, section: str, what: str, ratio: str, target: str, met: bool | None) -> None:
        self.checks.append(Check(section, what, ratio, target, met))

    # -- rendering -----------------------------------------------------------------------
    def ordered_checks(self) -> list[Check]:
        return sorted(self.checks, key=lambda c: c.section.split(".")[0])

    def summary_rows(self) -> list[list[str]]:
        return [[c.section, c.what, c.ratio, c.target, c.verdict] for c in self.ordered_checks()]

    def console_summary(self) -> str:
        rows = [
            [c.section, c.what, c.ratio, c.target, c.verdict.strip("*")]
            for c in self.ordered_checks()
        ]
        return plain_table(["section", "comparison", "ratio", "target", "verdict"], rows)

    def markdown(self, plot: str | None) -> str:
        out = ["# flightlake performance baseline", ""]
        out += [
            "Every number below comes from one run of the command below, on a **shared 2-core "
            "machine** where other engineers ran tests at the same time: treat small "
            "differences as noise. Each figure is the median of at least 3 runs, and each "
            "target is a ratio against the limit (pyarrow / DuckDB in-process, on the same "
            "data and storage) measured in the same run.",
            "",
            "```",
            self.command,
            "```",
            "",
        ]
        if self.quick:
            out += [
                "> **Quick run** (`--quick`): 500k rows only. The full run is `make bench`.",
                "",
            ]
        out += ["## Machine", "", md_table(["", ""], [[k, v] for k, v in self.facts.items()]), ""]
        if self.loads:
            out += [
                "1-minute load average when each section started (2 cores; above ~2 the "
                "benchmark shared the CPUs with other work): "
                + ", ".join(f"{name} {load:.2f}" for name, load in self.loads)
                + ".",
                "",
            ]
        out += [
            "## Summary",
            "",
            "Ingest ratios are throughput ratios (flightlake / limit: higher is better); "
            "query ratios are time ratios (flightlake / limit: lower is better). Verdicts "
            "compare the ratio as printed (2 decimals).",
            "",
            md_table(["section", "comparison", "ratio", "target", "verdict"], self.summary_rows()),
            "",
        ]
        for line in self.pending:
            out += [f"- **TODO (pending):** {line}"]
        if self.pending:
            out.append("")
        for sec in sorted(self.sections, key=lambda s: s.title):
            out += [f"## {sec.title}", ""]
            if sec.intro:
                out += [sec.intro, ""]
            for block in sec.blocks:
                out += [block, ""]
            if plot and sec.title.startswith("4."):
                out += [f"![throughput against concurrency]({plot})", ""]
        if self.notes:
            out += (
                ["## Missed targets: where the time and memory go", ""]
                + [f"- {n}" for n in self.notes]
                + [""]
            )
        return "\n".join(out)

    def write(self, path: Path, plot: str | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.markdown(plot))


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|")

    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cols = (
        [list(map(str, col)) for col in zip(headers, *rows, strict=False)]
        if rows
        else [[h] for h in headers]
    )
    widths = [max(len(v) for v in col) for col in cols]

    def line(values: Sequence[object]) -> str:
        return "  ".join(str(v).ljust(w) for v, w in zip(values, widths, strict=True))

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in rows]
    return "\n".join(out)


# -- number formatting ---------------------------------------------------------------------
def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def fmt_rate(count: float, seconds: float, unit: str = "rows/s") -> str:
    rate = count / seconds if seconds > 0 else float("inf")
    if rate >= 1e6:
        return f"{rate / 1e6:.2f} M {unit}"
    if rate >= 1e3:
        return f"{rate / 1e3:.0f} k {unit}"
    return f"{rate:.0f} {unit}"


def fmt_mbs(nbytes: float, seconds: float) -> str:
    return f"{nbytes / 1e6 / seconds:.0f} MB/s" if seconds > 0 else "-"


def fmt_mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.0f} MB"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x"


def plot_concurrency(
    path: Path, series: dict[str, tuple[list[int], list[float]]], limit: dict[str, float]
) -> None:
    """Aggregate throughput (MB/s) against clients, one line per storage, limits dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, (clients, mbs) in series.items():
        line = ax.plot(clients, mbs, marker="o", label=f"Flight do_get, {label}")[0]
        if label in limit:
            ax.axhline(
                limit[label],
                linestyle="--",
                color=line.get_color(),
                alpha=0.6,
                label=f"in-process DuckDB (1 stream), {label}",
            )
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({c for cs, _ in series.values() for c in cs}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("concurrent clients (processes)")
    ax.set_ylabel("aggregate throughput (MB/s of Arrow data)")
    ax.set_title("SELECT * FROM workers (500k rows): throughput against concurrency")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
