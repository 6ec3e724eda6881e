"""Every shell and Python block of the docs runs as written, against a live `flightlake serve`.

The docs are README.md, docs/*.md and clients/README.md. Each runnable block (see
tests/docblocks.py: ``sh``/``bash``/``shell``, the ``$ `` lines of ``console``, ``python``) is
one test, with the id ``FILE:LINE`` of its opening fence, and the blocks of a file run in
order: later ones may use what earlier ones made (a CSV, a dataset, a Python variable). A
failure names the file and the line. Asking for one block (``-k 'cli.md:70'``) runs the
blocks before it in that file first. A block is skipped only by a visible marker in the doc,
``<!-- doc-test: skip (REASON) -->`` on the line before its fence; pytest's summary lists
each skipped block with its reason. ``<!-- doc-test: server NAME=VALUE ... -->`` runs the block
after it against the file's server restarted with that environment (as the doc's prose tells
the reader to); the next block without it gets the plain server back. Python blocks after a
restart start a fresh namespace.

How a file runs, as a user would after ``make serve`` (the venv is the one ``make test`` made
the documented way; this interpreter):

- in a fresh working directory holding ``.venv`` (this venv), ``scripts/``, ``clients/`` and
  ``conf/`` (the committed config files), with the venv activated (``PATH``, ``VIRTUAL_ENV``),
  as the docs tell users to;
- beside one `flightlake serve` started there for the file, with default storage
  (``./flightlake-data``). Its ports are free ones: ``127.0.0.1:8815`` and ``:3110`` in a block
  (also ``localhost``, ``[::1]``) are replaced by them, and ``FLIGHTLAKE_SERVER`` points the
  CLI's default there (a shared machine cannot promise the documented ports);
- shell blocks run in bash with ``set -eo pipefail``: any failing command fails the block.
  ``curl`` runs with ``--fail-with-body -sS``, so an HTTP error status fails it too;
- a line that starts a server (``make serve``, ``flightlake serve ...``) is started by
  tests/doc_serve.py, which checks that it serves and stops it (it may not block forever);
- Python blocks of one file run in one interpreter, in one namespace.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.docblocks import Block, DocError, extract, python_source, shell_script, with_ports
from tests.subprocess_server import (
    ServerProcess,
    answers_flight,
    answers_http,
    env_without_flightlake,
    flightlake_serve,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "clients" / "README.md"]
BLOCK_SECONDS = 240
VENV_BIN = Path(sys.executable).parent
SERVE_HELPER = Path(__file__).resolve().parent / "doc_serve.py"
PRELUDE = (
    "set -eo pipefail; "
    'doc_serve() { "$DOC_TEST_PYTHON" "$DOC_TEST_SERVE" "$1"; }; '
    "trap 'echo \"doc-test: exit status $? at line $LINENO\" >&2' ERR"
)

# A Python driver that runs blocks in one namespace: a request per line on stdin
# ({"file", "code", "out"}), an answer per block ({"ok": bool}) on the file descriptor argv[1].
PY_DRIVER = """
import contextlib, json, linecache, os, sys, traceback
answers = os.fdopen(int(sys.argv[1]), "w")
namespace = {"__name__": "__main__"}
for request in sys.stdin:
    req = json.loads(request)
    with open(req["out"], "w") as out, contextlib.redirect_stdout(out), \\
            contextlib.redirect_stderr(out):
        try:
            exec(compile(req["code"], req["file"], "exec"), namespace)
            ok = True
        except BaseException:
            traceback.print_exc()
            ok = False
    answers.write(json.dumps({"ok": ok}) + "\\n")
    answers.flush()
"""


def all_blocks() -> list[Block]:
    blocks: list[Block] = []
    for doc in DOCS:
        blocks.extend(extract(doc))
    return blocks


BLOCKS = all_blocks()


@dataclass
class DocRun:
    """One doc file being run: its working directory, server, Python driver and results."""

    path: Path
    workdir: Path
    stack: ExitStack = field(default_factory=ExitStack)
    server_stack: ExitStack = field(default_factory=ExitStack)
    server: ServerProcess | None = None
    server_env: dict[str, str] = field(default_factory=dict)
    driver: subprocess.Popen[str] | None = None
    answers: int = -1
    results: dict[int, str | None] = field(default_factory=dict)  # line -> failure or None

    def start(self) -> None:
        for name in ("scripts", "clients"):
            (self.workdir / name).symlink_to(ROOT / name)
        (self.workdir / ".venv").symlink_to(VENV_BIN.parent)
        (self.workdir / "conf").mkdir()
        for conf in (ROOT / "conf").glob("*.toml"):
            if conf.name != "secrets.toml":  # a developer's own secrets never reach a test
                shutil.copy(conf, self.workdir / "conf" / conf.name)
        shims = self.workdir / ".doc-test-bin"
        shims.mkdir()
        curl = shutil.which("curl")
        if curl:
            (shims / "curl").write_text(f'#!/bin/sh\nexec {curl} -sS --fail-with-body "$@"\n')
            (shims / "curl").chmod(0o755)
        self.stack.callback(self.server_stack.close)
        self.serve({})

    def serve(self, env: dict[str, str]) -> None:
        """(Re)start the file's server with ``env``; /health answers without credentials."""
        self._stop_driver()
        self.server_stack.close()
        self.server_env = env
        self.server = self.server_stack.enter_context(
            flightlake_serve(
                env=env_without_flightlake(env),
                cwd=self.workdir,
                ready=lambda s: answers_http(s) and (bool(env) or answers_flight(s)),
            )
        )

    @property
    def env(self) -> dict[str, str]:
        assert self.server is not None
        path = f"{self.workdir / '.doc-test-bin'}:{VENV_BIN}:{os.environ.get('PATH', '')}"
        return env_without_flightlake(
            {
                "PATH": path,
                "VIRTUAL_ENV": str(VENV_BIN.parent),
                "FLIGHTLAKE_SERVER": self.server.flight,
                "DOC_TEST_PYTHON": sys.executable,
                "DOC_TEST_SERVE": str(SERVE_HELPER),
                "PYTHONUNBUFFERED": "1",
            }
        )

    def run(self, block: Block) -> str | None:
        """Run ``block``; None when it passed, else what went wrong (output included)."""
        assert self.server is not None
        wanted = block.server_env or {}
        if wanted != self.server_env:
            try:
                self.serve(wanted)
            except AssertionError as exc:  # it exited: the doc's restart does not work
                return f"restarting the server with {wanted} failed: {exc}"
        if block.lang == "python":
            return self._run_python(block)
        script = shell_script(block, PRELUDE, "doc_serve")
        script = with_ports(script, self.server.flight_port, self.server.http_port)
        try:
            done = subprocess.run(
                ["bash", "-c", script],
                cwd=self.workdir,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=BLOCK_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return f"timed out after {BLOCK_SECONDS} s\n{exc.stdout or ''}{exc.stderr or ''}"
        if done.returncode != 0:
            return f"exit status {done.returncode}\n{done.stdout}{done.stderr}"
        return None

    def _run_python(self, block: Block) -> str | None:
        assert self.server is not None
        if self.driver is None:
            read_fd, write_fd = os.pipe()
            self.driver = subprocess.Popen(
                [sys.executable, "-c", PY_DRIVER, str(write_fd)],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
                pass_fds=(write_fd,),
            )
            os.close(write_fd)
            self.answers = read_fd
            self.stack.callback(self._stop_driver)
        code = with_ports(python_source(block), self.server.flight_port, self.server.http_port)
        out = self.workdir / ".doc-test-python.out"
        assert self.driver.stdin is not None
        request = {"file": str(block.path), "code": code, "out": str(out)}
        self.driver.stdin.write(json.dumps(request) + "\n")
        self.driver.stdin.flush()
        ready, _, _ = select.select([self.answers], [], [], BLOCK_SECONDS)
        answer = os.read(self.answers, 4096) if ready else b""
        output = out.read_text() if out.exists() else ""
        if not ready:
            self._stop_driver()
            return f"timed out after {BLOCK_SECONDS} s\n{output}"
        if not answer:
            return f"the Python interpreter exited\n{output}"
        return None if json.loads(answer)["ok"] else output

    def _stop_driver(self) -> None:
        if self.driver is not None and self.driver.poll() is None:
            self.driver.kill()
            self.driver.wait()
        if self.driver is not None and self.driver.stdin:
            self.driver.stdin.close()
        self.driver = None
        if self.answers >= 0:
            os.close(self.answers)
            self.answers = -1

    def close(self) -> None:
        self.stack.close()


class DocRunner:
    """The DocRun of the file being run; one at a time, so one server is alive at a time."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.current: DocRun | None = None

    def for_file(self, path: Path) -> DocRun:
        if self.current is None or self.current.path != path:
            self.close()
            self.current = DocRun(path, self.tmp.mktemp(path.stem))
            self.current.start()
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocRunner]:
    docs = DocRunner(tmp_path_factory)
    yield docs
    docs.close()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where(ROOT) for b in BLOCKS])
def test_doc_block(block: Block, runner: DocRunner) -> None:
    if block.skip:
        pytest.skip(f"{block.where(ROOT)}: {block.skip}")
    run = runner.for_file(block.path)
    for earlier in BLOCKS:  # the blocks before this one in its file, unless already run
        if earlier is block:
            break
        if earlier.path == block.path and not earlier.skip and earlier.line not in run.results:
            run.results[earlier.line] = run.run(earlier)
    failed = [line for line, failure in run.results.items() if failure]
    if failed:
        pytest.fail(
            f"{block.where(ROOT)}: not run, an earlier block of the file failed: "
            + ", ".join(f"{block.path.name}:{line}" for line in failed),
            pytrace=False,
        )
    run.results[block.line] = failure = run.run(block)
    if failure:
        pytest.fail(f"{block.where(ROOT)} ({block.lang}) failed: {failure}", pytrace=False)


# -- the runner itself ---------------------------------------------------------------------
def test_every_doc_has_blocks_and_markers_parse() -> None:
    """Parsing every doc raised no DocError at import, and the runner finds the blocks."""
    assert {b.path for b in BLOCKS} >= {ROOT / "README.md", ROOT / "clients" / "README.md"}
    assert len(BLOCKS) >= 40


def test_markers_need_a_reason_and_a_block(tmp_path: Path) -> None:
    doc = tmp_path / "bad.md"
    doc.write_text("<!-- doc-test: skip -->\n```sh\ntrue\n```\n")
    with pytest.raises(DocError, match=r"bad.md:1: doc-test marker must read"):
        extract(doc)
    doc.write_text("<!-- doc-test: skip (why) -->\n\ntext\n```sh\ntrue\n```\n")
    with pytest.raises(DocError, match="must sit right before a code fence"):
        extract(doc)
    doc.write_text("<!-- doc-test: skip (why) -->\n```toml\nx = 1\n```\n")
    with pytest.raises(DocError, match="never runs"):
        extract(doc)
    doc.write_text("a\n<!-- doc-test: skip (needs docker) -->\n```sh\ndocker ps\n```\n")
    [block] = extract(doc)
    assert (block.line, block.skip) == (3, "needs docker")
    doc.write_text("<!-- doc-test: server A=1 B_2=x.toml -->\n```sh\ntrue\n```\n")
    [block] = extract(doc)
    assert (block.skip, block.server_env) == (None, {"A": "1", "B_2": "x.toml"})
    doc.write_text("<!-- doc-test: server -->\n```sh\ntrue\n```\n")
    with pytest.raises(DocError, match="must read"):
        extract(doc)


def test_a_drifted_block_fails_naming_file_and_line(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A doc whose command no longer exists, or whose Python raises, fails with FILE:LINE."""
    doc = tmp_path / "drift.md"
    doc.write_text(
        "# drift\n\n```sh\nflightlake datasets\nflightlake no-such-command\n```\n\n"
        "```python\nx = 1\n\nraise ValueError('drifted')\n```\n"
        "```console\n$ curl http://127.0.0.1:3110/v1/datasets/nope\n```\n"
    )
    shell, python, console = extract(doc)
    docs = DocRunner(tmp_path_factory)
    try:
        run = docs.for_file(doc)
        failure = run.run(shell)
        assert failure is not None
        assert "No such command 'no-such-command'" in failure
        assert "at line 5" in failure  # drift.md:5 is the failing command
        failure = run.run(python)
        assert failure is not None
        assert f'File "{doc}", line 11' in failure
        assert "ValueError: drifted" in failure
        failure = run.run(console)  # curl fails on an HTTP error status
        assert failure is not None
        assert "404" in failure
    finally:
        docs.close()


def test_a_serve_line_must_serve(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A documented server start that is refused fails its block; one that serves passes."""
    doc = tmp_path / "serve.md"
    doc.write_text(
        "```sh\nflightlake serve --storage lake2 --flight-port 8815\n```\n\n"
        "```sh\nflightlake serve --config missing.toml\n```\n"
    )
    good, bad = extract(doc)
    docs = DocRunner(tmp_path_factory)
    try:
        run = docs.for_file(doc)
        assert run.run(good) is None
        assert (run.workdir / "lake2").is_dir()
        failure = run.run(bad)
        assert failure is not None
        assert "before it served" in failure
    finally:
        docs.close()


def test_the_doc_venv_has_what_make_serve_installs() -> None:
    """The docs run on the venv `make test` made; the README promises what `make serve`
    installs (the `clients` extra). Both must hold the same client packages."""
    import importlib.metadata
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in reqs}

    makefile = (ROOT / "Makefile").read_text()
    [serve_deps] = re.findall(r"^serve:(.*)$", makefile, flags=re.MULTILINE)
    recipes = "".join(
        makefile.split(f"{dep}:", 1)[1].split("\n\n", 1)[0] for dep in serve_deps.split()
    )
    assert re.search(r"-e '\.\[[\w,]*clients[\w,]*\]'", recipes), "make serve: clients extra"
    for name in names(extras["clients"]):
        assert importlib.metadata.version(name), f"{name} is not installed in this venv"


def test_a_server_marker_restarts_the_server_with_its_environment(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    doc = tmp_path / "auth.md"
    doc.write_text(
        "```sh\nprintf '[[tokens]]\\ntoken = \"t0k\"\\n' > s.toml\n```\n\n"
        "<!-- doc-test: server FLIGHTLAKE_SECRETS_FILE=s.toml -->\n"
        "```sh\ncurl -H 'Authorization: Bearer t0k' http://127.0.0.1:3110/v1/datasets\n```\n\n"
        "```sh\ncurl http://127.0.0.1:3110/v1/datasets\n```\n\n"
        "<!-- doc-test: server FLIGHTLAKE_SECRETS_FILE=s.toml -->\n"
        "```sh\ncurl http://127.0.0.1:3110/v1/datasets\n```\n"
    )
    write, with_token, plain, without = extract(doc)
    docs = DocRunner(tmp_path_factory)
    try:
        run = docs.for_file(doc)
        first = run.server
        assert run.run(write) is None
        assert run.run(with_token) is None
        assert run.server is not first  # restarted, on new ports
        assert run.run(plain) is None  # the plain server is back for a block without marker
        failure = run.run(without)  # with the secrets file, no token is refused
        assert failure is not None
        assert "401" in failure
    finally:
        docs.close()
