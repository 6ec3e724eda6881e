"""Deployment files stay true to the code: the generated settings docs, docker-compose.yml and
the Dockerfile.

No Docker engine runs here, so the compose file and the Dockerfile are parsed and their wiring
checked against `flightlake.config.SETTINGS`; then `flightlake serve` is started with exactly
the compose file's flightlake environment, MinIO swapped for the test S3 server.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.flight as flight
import pytest
import yaml

from flightlake.config import SETTINGS, Settings, load_settings
from scripts import gen_config_docs
from tests.helpers import free_port, wait_until
from tests.subprocess_server import ServerProcess, flightlake_serve

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEFAULTS = {s.name: s.default for s in SETTINGS}
SETTING_ENVS = {s.env for s in SETTINGS}
# Variables flightlake reads that are not settings (files, not values).
OTHER_ENVS = {"FLIGHTLAKE_CONFIG", "FLIGHTLAKE_SECRETS_FILE"}
HTTP_AVAILABLE = importlib.util.find_spec("flightlake.http") is not None


# -- generated settings docs -----------------------------------------------------------------
def test_conf_toml_is_generated_from_settings() -> None:
    path = gen_config_docs.TOML_PATH
    assert path.read_text(encoding="utf-8") == gen_config_docs.render_toml(), (
        "conf/flightlake.toml is out of date: run python -m scripts.gen_config_docs"
    )


def test_configuration_md_table_is_generated_from_settings() -> None:
    text = gen_config_docs.DOC_PATH.read_text(encoding="utf-8")
    assert gen_config_docs.update_markdown(text) == text, (
        "docs/configuration.md's settings table is out of date: "
        "run python -m scripts.gen_config_docs"
    )
    for setting in SETTINGS:
        assert f"| `{setting.name}` | `{setting.env}` |" in text


def test_gen_config_docs_check_fails_on_drift(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale_toml = tmp_path / "flightlake.toml"
    stale_toml.write_text(gen_config_docs.render_toml().replace("# max_list = 10000\n", ""))
    doc = tmp_path / "configuration.md"
    doc.write_text(gen_config_docs.DOC_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(gen_config_docs, "TOML_PATH", stale_toml)
    monkeypatch.setattr(gen_config_docs, "DOC_PATH", doc)
    monkeypatch.setattr(gen_config_docs, "ROOT", tmp_path)
    assert gen_config_docs.main(["--check"]) == 1
    assert gen_config_docs.main([]) == 0  # rewrites the stale copy
    assert gen_config_docs.main(["--check"]) == 0


def _setting_values(settings: Settings) -> dict[str, Any]:
    return {s.name: getattr(settings, s.name) for s in SETTINGS}


def test_conf_toml_names_every_setting_and_changes_nothing(tmp_path: Path) -> None:
    text = gen_config_docs.TOML_PATH.read_text(encoding="utf-8")
    as_is = load_settings(gen_config_docs.TOML_PATH, env={})
    assert _setting_values(as_is) == DEFAULTS
    # Uncommenting every `# name = value` line gives a valid file that still sets the defaults.
    names = "|".join(re.escape(s.name) for s in SETTINGS)
    uncommented = re.sub(rf"^# ({names}) = ", r"\1 = ", text, flags=re.MULTILINE)
    values = tomllib.loads(uncommented)
    assert set(values) == set(DEFAULTS)
    active = tmp_path / "all.toml"
    active.write_text(uncommented)
    assert _setting_values(load_settings(active, env={})) == DEFAULTS


def test_settings_dataclass_defaults_match_the_documented_ones() -> None:
    """The docs are generated from SETTINGS; Settings() must really use those defaults."""
    dataclass_defaults = {f.name: f.default for f in fields(Settings) if f.name in DEFAULTS}
    assert dataclass_defaults == DEFAULTS
    assert {f.name for f in fields(Settings)} >= set(DEFAULTS)


def test_secrets_example_is_valid_and_git_ignored_when_copied() -> None:
    example = tomllib.loads((ROOT / "conf" / "secrets.example.toml").read_text())
    assert set(example["s3"]) >= {"access_key_id", "secret_access_key"}
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "conf/secrets.toml"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "conf/secrets.toml must be git-ignored"


# -- docker-compose.yml ----------------------------------------------------------------------
_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: ``${X}``, ``${X:-default}``, ``${X-default}``, ``$$``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        current = env.get(name)
        if (op == ":-" and not current) or (op == "-" and current is None):
            return arg
        if op in (":?", "?") and not current:
            raise AssertionError(f"compose requires ${name}: {arg}")
        return current or ""

    return _VAR.sub(one, value)


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml with variables substituted as compose would with ``env`` set."""
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env or {})


def service_env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(k): str(v) for k, v in raw.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def lake_env(compose: dict[str, Any]) -> dict[str, str]:
    return service_env(compose["services"]["flightlake"])


def test_compose_sets_only_known_flightlake_variables(lake_env: dict[str, str]) -> None:
    names = {k for k in lake_env if k.startswith("FLIGHTLAKE_")}
    unknown = names - SETTING_ENVS - OTHER_ENVS
    assert not unknown, f"docker-compose.yml sets variables flightlake never reads: {unknown}"
    assert {"FLIGHTLAKE_STORAGE", "FLIGHTLAKE_S3_ENDPOINT", "FLIGHTLAKE_HOST"} <= names
    # Every value parses: the server would not refuse to start on a type error.
    settings = load_settings(gen_config_docs.TOML_PATH, env=lake_env)
    assert settings.is_s3
    assert settings.host == "0.0.0.0"
    assert settings.credentials, "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not wired"


def _published(ports: list[Any]) -> dict[int, tuple[str, int]]:
    """container port -> (host address, host port) for compose's short port syntax."""
    out = {}
    for entry in ports:
        parts = str(entry).split(":")
        host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        out[int(parts[-1])] = (host_ip, int(parts[-2]))
    return out


def test_compose_ports_are_the_defaults_on_loopback(
    compose: dict[str, Any], lake_env: dict[str, str]
) -> None:
    settings = load_settings(gen_config_docs.TOML_PATH, env=lake_env)
    assert settings.flight_port == DEFAULTS["flight_port"]
    assert settings.http_port == DEFAULTS["http_port"]
    published = _published(compose["services"]["flightlake"]["ports"])
    assert published == {
        DEFAULTS["flight_port"]: ("127.0.0.1", DEFAULTS["flight_port"]),
        DEFAULTS["http_port"]: ("127.0.0.1", DEFAULTS["http_port"]),
    }
    # Flight enforces no authentication yet: nothing may be published beyond loopback.
    for name, service in compose["services"].items():
        for host_ip, _ in _published(service.get("ports", [])).values():
            assert host_ip == "127.0.0.1", f"{name} publishes a port beyond loopback"


def test_compose_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    check = " ".join(services["flightlake"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{DEFAULTS['http_port']}/health" in check
    assert services["minio"]["healthcheck"]["test"]


def test_compose_startup_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["flightlake"]["depends_on"] == {
        "minio": {"condition": "service_healthy"},
        "createbucket": {"condition": "service_completed_successfully"},
    }
    assert services["createbucket"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert services["createbucket"]["restart"] == "no"


def _created_buckets(compose: dict[str, Any]) -> list[str]:
    script = compose["services"]["createbucket"]["command"]
    script = "\n".join(script) if isinstance(script, list) else script
    buckets = []
    for line in script.splitlines():
        words = shlex.split(line)
        if words[:2] == ["mc", "mb"]:
            target = next(w for w in words[2:] if not w.startswith("-"))
            buckets.append(target.split("/", 1)[1])
    return buckets


def test_compose_bucket_endpoint_and_credentials_match(
    compose: dict[str, Any], lake_env: dict[str, str]
) -> None:
    storage = urlparse(lake_env["FLIGHTLAKE_STORAGE"])
    assert storage.scheme == "s3"
    assert _created_buckets(compose) == [storage.netloc]
    endpoint = urlparse(lake_env["FLIGHTLAKE_S3_ENDPOINT"])
    assert endpoint.hostname == "minio"
    assert "minio" in compose["services"]
    assert endpoint.port == 9000
    minio_env = service_env(compose["services"]["minio"])
    assert lake_env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
    assert lake_env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
    # The same with the variables set: nothing is hard-coded on one side only.
    custom = load_compose({"MINIO_ROOT_USER": "u-1", "MINIO_ROOT_PASSWORD": "p-12345678"})
    assert service_env(custom["services"]["flightlake"])["AWS_ACCESS_KEY_ID"] == "u-1"
    assert service_env(custom["services"]["createbucket"])["MINIO_ROOT_PASSWORD"] == "p-12345678"


def test_compose_images_are_pinned_and_volumes_declared(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
            continue
        image = service["image"]
        assert ":" in image, f"{name}: pin {image}"
        assert not image.endswith(":latest"), f"{name}: pin {image}"
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_compose_paths_exist_in_the_image(
    compose: dict[str, Any], lake_env: dict[str, str]
) -> None:
    """Container paths the compose file uses are the ones the Dockerfile prepares."""
    docker = dockerfile_final_stage()
    workdir = docker["WORKDIR"][-1]
    mounts = {
        v.split(":")[1]: v.split(":")[0] for v in compose["services"]["flightlake"]["volumes"]
    }
    assert mounts.get(f"{workdir}/conf") == "./conf"  # the default conf/ paths resolve here
    spool = lake_env["FLIGHTLAKE_SPOOL_DIR"]
    assert spool in mounts, "the spool folder should be a volume"
    assert any(spool in run for run in docker["RUN"]), "the image must create the spool folder"


# -- Dockerfile ------------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_final_stage() -> dict[str, list[str]]:
    stages: list[dict[str, list[str]]] = []
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            stages.append({})
        stages[-1].setdefault(word, []).append(rest)
    return stages[-1]


def test_dockerfile_base_images_are_python_311_slim() -> None:
    froms = [rest.split()[0] for word, rest in dockerfile_instructions() if word == "FROM"]
    assert froms
    assert all(image == "python:3.11-slim" for image in froms), froms
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    from packaging.specifiers import SpecifierSet  # a dependency of pytest

    assert "3.11" in SpecifierSet(requires), f"the image's Python 3.11 is outside {requires}"


def test_dockerfile_runs_as_non_root() -> None:
    final = dockerfile_final_stage()
    assert "USER" in final, "the runtime stage must switch to an unprivileged user"
    user = final["USER"][-1].split(":")[0]
    assert user not in ("root", "0")


def test_dockerfile_installs_with_the_constraints() -> None:
    runs = [rest for word, rest in dockerfile_instructions() if word == "RUN"]
    assert any(re.search(r"pip install -c constraints\.txt \.(\s|$)", run) for run in runs)


def test_dockerfile_ports_health_and_command() -> None:
    final = dockerfile_final_stage()
    exposed = {int(p) for line in final["EXPOSE"] for p in line.split()}
    assert exposed == {DEFAULTS["flight_port"], DEFAULTS["http_port"]}
    health = final["HEALTHCHECK"][-1]
    assert "/health" in health
    assert f"'{DEFAULTS['http_port']}'" in health
    assert _exec_form(final["CMD"][-1]) == ["flightlake", "serve", "--host", "0.0.0.0"]


def _exec_form(args: str) -> list[str]:
    value = yaml.safe_load(args)  # a JSON array is valid YAML
    assert isinstance(value, list), f"use the exec (JSON array) form: {args}"
    return [str(v) for v in value]


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def in_build_context(path: str) -> bool:
    """Whether .dockerignore lets ``path`` (relative, with /) into the build context: the
    last pattern matching the path or one of its parent folders decides."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), _ignore_regex(line.lstrip("!"))))
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negated, regex in rules:
        if any(regex.match(p) for p in prefixes):
            included = negated
    return included


def test_dockerignore_lets_every_copy_source_in_and_keeps_secrets_out() -> None:
    sources: list[str] = []
    for word, rest in dockerfile_instructions():
        if word == "COPY" and "--from" not in rest:
            args = [a for a in rest.split() if not a.startswith("--")]
            sources.extend(args[:-1])
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file"
        files = [p for p in path.rglob("*.py")] if path.is_dir() else [path]
        for file in files:
            rel = file.relative_to(ROOT).as_posix()
            if "__pycache__" not in rel:
                assert in_build_context(rel), f".dockerignore drops {rel}"
    # pyproject's readme must be copied, or the package build fails.
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert readme in sources
    for private in (
        "conf/secrets.toml",
        ".venv/bin/python",
        "flightlake-data/x",
        ".git/config",
        "flightlake/__pycache__/cli.cpython-311.pyc",
    ):
        assert not in_build_context(private), f"{private} would be sent to the Docker build"


# -- the compose environment, served for real ------------------------------------------------
def compose_env_for_test(s3_server: Any, bucket: str, tmp_path: Path) -> dict[str, str]:
    """The flightlake service's environment, with MinIO's endpoint, credentials and bucket
    replaced by the test S3 server's, and container volume paths by temp folders."""
    compose = load_compose()
    env = service_env(compose["services"]["flightlake"])
    storage = urlparse(env["FLIGHTLAKE_STORAGE"])
    env["FLIGHTLAKE_STORAGE"] = f"s3://{bucket}{storage.path}"
    env["FLIGHTLAKE_S3_ENDPOINT"] = s3_server.endpoint
    env["AWS_ACCESS_KEY_ID"] = s3_server.access_key
    env["AWS_SECRET_ACCESS_KEY"] = s3_server.secret_key
    for volume in compose["services"]["flightlake"]["volumes"]:
        target = volume.split(":")[1]
        for key, value in env.items():
            if value == target or value.startswith(target + "/"):
                local = tmp_path / "volumes" / target.strip("/")
                local.mkdir(parents=True, exist_ok=True)
                env[key] = str(local) + value[len(target) :]
    return env


@contextmanager
def serve_like_the_image(env: dict[str, str], workdir: Path) -> Iterator[ServerProcess]:
    """Run the Dockerfile's CMD with only ``env`` (plus PATH/HOME), in ``workdir``.

    The listen address and ports are given as flags (which beat the environment), so the
    environment stays exactly the compose file's: 127.0.0.1 instead of 0.0.0.0, and free
    ports instead of 8815 / 3110 that other servers on this machine may hold.
    """
    command = _exec_form(dockerfile_final_stage()["CMD"][-1])
    assert command[:2] == ["flightlake", "serve"]
    args = command[2:]
    args[args.index("--host") + 1] = "127.0.0.1"
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    with flightlake_serve(*args, env={**base, **env}, cwd=workdir) as served:
        yield served


@pytest.fixture
def image_workdir(tmp_path: Path) -> Path:
    """The container's working directory: conf/ as compose mounts it (./conf, read-only),
    without a developer's own conf/secrets.toml."""
    workdir = tmp_path / "srv"
    (workdir / "conf").mkdir(parents=True)
    (workdir / "conf" / "flightlake.toml").write_bytes(gen_config_docs.TOML_PATH.read_bytes())
    return workdir


@pytest.mark.s3
def test_compose_environment_serves_on_s3(
    s3_server: Any, s3_bucket: str, tmp_path: Path, image_workdir: Path
) -> None:
    env = compose_env_for_test(s3_server, s3_bucket, tmp_path)
    with serve_like_the_image(env, image_workdir) as served:
        client = flight.FlightClient(served.flight)
        health = [r.body.to_pybytes() for r in client.do_action(flight.Action("health", b""))]
        assert b'"status": "ok"' in health[0]
        # A CSV ingest goes through the spool folder the compose file configures.
        csv = b"id,state\n1,IL\n2,CA\n3,IL\n"
        command = b'{"ingest": "compose_smoke", "format": "csv", "mode": "create"}'
        writer, meta = client.do_put(
            flight.FlightDescriptor.for_command(command), pa.schema([("data", pa.binary())])
        )
        with writer:
            writer.write_batch(pa.record_batch([pa.array([csv], pa.binary())], names=["data"]))
            writer.done_writing()
            assert b'"rows_written": 3' in meta.read().to_pybytes()
        table = client.do_get(flight.Ticket(b"SELECT count(*) AS n FROM compose_smoke")).read_all()
        assert table.to_pylist() == [{"n": 3}]
        client.close()
    # The data is in the bucket under the compose file's prefix, catalog included.
    prefix = urlparse(env["FLIGHTLAKE_STORAGE"]).path.strip("/")
    keys = [
        o["Key"]
        for o in s3_server.client()
        .list_objects_v2(Bucket=s3_bucket, Prefix=prefix + "/")
        .get("Contents", [])
    ]
    assert any(k.startswith(f"{prefix}/data/compose_smoke/_delta_log/") for k in keys)
    assert any(k.startswith(f"{prefix}/data/") for k in keys)


def _healthcheck_commands(http_port: int) -> list[tuple[list[str], dict[str, str]]]:
    """The compose and Dockerfile health checks, pointed at ``http_port``."""
    compose = load_compose()
    compose_cmd = compose["services"]["flightlake"]["healthcheck"]["test"]
    assert compose_cmd[0] == "CMD"
    compose_cmd = [
        c.replace(f":{DEFAULTS['http_port']}/", f":{http_port}/") for c in compose_cmd[1:]
    ]
    health = dockerfile_final_stage()["HEALTHCHECK"][-1]
    docker_cmd = _exec_form(health.split(" CMD ", 1)[1])
    out = []
    for cmd, env in ((compose_cmd, {}), (docker_cmd, {"FLIGHTLAKE_HTTP_PORT": str(http_port)})):
        assert cmd[0] == "python"
        out.append(([sys.executable, *cmd[1:]], env))
    return out


def test_healthchecks_fail_when_nothing_listens() -> None:
    for cmd, env in _healthcheck_commands(free_port()):
        result = subprocess.run(
            cmd, env={**os.environ, **env}, capture_output=True, timeout=30, check=False
        )
        assert result.returncode != 0


@pytest.mark.s3
@pytest.mark.skipif(
    not HTTP_AVAILABLE,
    reason="the HTTP front end (flightlake.http) is not "
    "built yet; the health checks poll its /health",
)
def test_healthchecks_pass_against_the_compose_environment(
    s3_server: Any, s3_bucket: str, tmp_path: Path, image_workdir: Path
) -> None:
    env = compose_env_for_test(s3_server, s3_bucket, tmp_path)
    with serve_like_the_image(env, image_workdir) as served:
        for cmd, extra in _healthcheck_commands(served.http_port):

            def healthy(cmd: list[str] = cmd, extra: dict[str, str] = extra) -> bool:
                result = subprocess.run(
                    cmd, env={**os.environ, **extra}, capture_output=True, timeout=30, check=False
                )
                return result.returncode == 0

            wait_until(healthy, timeout=30, interval=0.5, what=f"health check {cmd[-1][:60]}")


# -- hand-written docs that name things in the code ------------------------------------------
DOCS = ROOT / "docs"


def test_protocol_doc_names_every_action_and_error_mapping() -> None:
    from flightlake import errors
    from flightlake.flight.server import ACTIONS, to_flight_error

    text = (DOCS / "protocol.md").read_text()
    for action in ACTIONS:
        assert f"| `{action}` |" in text, f"docs/protocol.md does not document action {action}"
    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.FlightlakeError)
    ]
    assert len(classes) >= 9
    for cls in classes:
        raised = type(to_flight_error(cls("x")))
        module = "pyarrow.flight" if raised.__module__.endswith("_flight") else "pyarrow"
        assert f"`{module}.{raised.__name__}`" in text, f"{cls.__name__} -> {raised.__name__}"


def test_cli_doc_names_every_command_and_option() -> None:
    import click

    from flightlake.cli import main

    text = (DOCS / "cli.md").read_text()
    for name, command in main.commands.items():
        assert f"## `flightlake {name}`" in text, f"docs/cli.md has no section for {name}"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.opts[0] in text, f"docs/cli.md does not mention {name} {param.opts[0]}"


def _anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", doc.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_docs_links_point_at_existing_files_and_headings() -> None:
    mine = ["protocol.md", "cli.md", "configuration.md", "operations.md"]
    for doc in [*(DOCS / name for name in mine), ROOT / "clients" / "README.md"]:
        for target, anchor in re.findall(r"\]\(([^)#:]*)(?:#([^)]*))?\)", doc.read_text()):
            path = doc.parent / target if target else doc
            assert path.exists(), f"{doc.name} links to missing {target}"
            if anchor and path.suffix == ".md":
                assert anchor in _anchors(path), f"{doc.name} links to missing #{anchor}"
