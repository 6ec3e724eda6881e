"""The runnable blocks of the Markdown docs, and how tests/test_docs.py rewrites them to run.

A block is a fenced code block whose language is one of ``sh``, ``bash``, ``shell``,
``console`` (only its ``$ `` lines run; the other lines are example output) or ``python``.
Every other fence (``toml``, ``json``, ``ini``, a bare fence for usage text) is text.

A block is skipped only when the line right before its opening fence is a visible marker
with a reason:

    <!-- doc-test: skip (needs docker) -->

The other marker runs the block after it against the file's server restarted with more
environment (the doc's prose says to restart it that way, e.g. with a secrets file an earlier
block wrote); the next block without the marker gets the plain server back:

    <!-- doc-test: server FLIGHTLAKE_SECRETS_FILE=secrets.toml -->

A marker without a reason, or any other ``doc-test:`` word, is an error, so a typo never
silently stops a block from running.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

SHELL_LANGS = frozenset({"sh", "bash", "shell", "console"})
RUN_LANGS = SHELL_LANGS | {"python"}
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*doc-test:(.*?)-->\s*$")  # a line of its own, not prose
SKIP = re.compile(r"^\s*skip\s*\((.+)\)\s*$")
SERVER = re.compile(r"^\s*server\s+((?:[A-Z_][A-Z0-9_]*=\S+\s*)+)$")

#: the documented ports, replaced by the ports of the server each file runs against
FLIGHT_PORT, HTTP_PORT = 8815, 3110
#: a line that starts a server in the foreground: `make serve`, `flightlake serve ...`
SERVE = re.compile(
    r"^\s*(?:\w+=\S*\s+)*(?:make\s+serve\b|(?:\S*/)?flightlake\s+(?:-\S+\s+)*serve\b|"
    r"(?:\S*/)?python[\d.]*\s+-m\s+flightlake\s+(?:-\S+\s+)*serve\b)"
)


class DocError(Exception):
    """A doc-test marker that cannot be obeyed (no reason, unknown word, nothing after it)."""


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text and why it is skipped (if so)."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    skip: str | None = None
    #: environment to restart the file's server with before this block (a server marker)
    server_env: dict[str, str] | None = None

    @property
    def first_line(self) -> int:
        """The doc line of the block's first line of code."""
        return self.line + 1

    def where(self, root: Path) -> str:
        """``docs/cli.md:42``: the id tests and messages use."""
        try:
            rel = self.path.relative_to(root)
        except ValueError:
            rel = Path(self.path.name)
        return f"{rel.as_posix()}:{self.line}"


def extract(path: Path) -> list[Block]:
    """The runnable blocks of the Markdown file ``path``, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str | None, dict[str, str] | None] | None = None  # a marker
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        if marker:
            word = marker.group(1)
            skip, server = SKIP.match(word), SERVER.match(word)
            if skip and skip.group(1).strip():
                pending = (i + 1, skip.group(1).strip(), None)
            elif server:
                env = dict(pair.split("=", 1) for pair in server.group(1).split())
                pending = (i + 1, None, env)
            else:
                raise DocError(
                    f"{path.name}:{i + 1}: doc-test marker must read "
                    "`<!-- doc-test: skip (REASON) -->` or "
                    f"`<!-- doc-test: server NAME=VALUE ... -->`, got {marker.group(0)!r}"
                )
            i += 1
            continue
        fence = FENCE.match(line)
        if not fence:
            if pending and line.strip():
                raise DocError(
                    f"{path.name}:{pending[0]}: a doc-test marker must sit right "
                    "before a code fence"
                )
            i += 1
            continue
        indent, ticks, lang = fence.groups()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(ticks):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1  # the closing fence
        lang = lang.lower()
        if pending and lang not in RUN_LANGS:
            raise DocError(
                f"{path.name}:{pending[0]}: doc-test marker before a {lang or 'plain'}"
                " block, which never runs"
            )
        if lang in RUN_LANGS:
            text = "\n".join(body) + "\n"
            skip_reason, env = (pending[1], pending[2]) if pending else (None, None)
            blocks.append(Block(path, start + 1, lang, text, skip_reason, env))
        pending = None
    if pending:
        raise DocError(f"{path.name}:{pending[0]}: a doc-test marker with no block after it")
    return blocks


def with_ports(text: str, flight_port: int, http_port: int) -> str:
    """The documented loopback ports replaced by the test server's ones."""
    for host in ("127.0.0.1", "localhost", "[::1]"):
        text = text.replace(f"{host}:{FLIGHT_PORT}", f"{host}:{flight_port}")
        text = text.replace(f"{host}:{HTTP_PORT}", f"{host}:{http_port}")
    return text


def shell_script(block: Block, prelude: str, serve_call: str) -> str:
    """The block as a bash script whose line N is the doc's line N (for error messages), after
    ``prelude`` (one line of shell) on line 1.

    ``console`` blocks keep only their ``$ `` lines. A line that starts a server becomes
    ``serve_call 'LINE'`` (its continuation lines become blank), so the runner can start it,
    check that it answers and stop it, instead of waiting forever.
    """
    raw = block.text.splitlines()
    if block.lang == "console":
        raw = [ln[2:] if ln.startswith("$ ") else "" for ln in raw]
    out: list[str] = []
    i = 0
    while i < len(raw):
        line = raw[i]
        if SERVE.match(line):
            logical, used = line, 1
            while logical.rstrip().endswith("\\") and i + used < len(raw):
                logical = logical.rstrip()[:-1] + " " + raw[i + used].strip()
                used += 1
            out.append(f"{serve_call} {shlex.quote(logical.strip())}")
            out.extend([""] * (used - 1))
            i += used
            continue
        out.append(line)
        i += 1
    assert "\n" not in prelude
    return prelude + "\n" * (block.first_line - 1) + "\n".join(out) + "\n"


def python_source(block: Block) -> str:
    """The block's code padded so that tracebacks show the doc's own line numbers."""
    return "\n" * (block.first_line - 1) + block.text
