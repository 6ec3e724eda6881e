"""Settings: defaults < config file < FLIGHTLAKE_* environment < flags; secrets stay secret."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from flightlake.config import SETTINGS, Settings, load_settings
from flightlake.errors import InvalidInput
from flightlake.values import parse_size
from tests.subprocess_server import FLIGHTLAKE, env_without_flightlake


def test_defaults_match_the_contract(tmp_path: Path) -> None:
    s = load_settings(env={})
    assert (s.storage, s.host, s.flight_port, s.http_port) == (
        "./flightlake-data",
        "127.0.0.1",
        8815,
        3110,
    )
    assert s.max_upload_bytes == 268435456
    assert s.max_concurrent_ingests == 4
    assert s.s3_region == "us-east-1"


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    conf = tmp_path / "flightlake.toml"
    conf.write_text(
        'storage = "from-file"\nflight_port = 1111\nhttp_port = 2222\nmax_concurrent_ingests = 7\n'
    )
    env = {"FLIGHTLAKE_FLIGHT_PORT": "3333", "FLIGHTLAKE_HTTP_PORT": "4444"}
    s = load_settings(conf, flags={"http_port": 5555, "host": None}, env=env)
    assert s.storage == "from-file"
    assert s.max_concurrent_ingests == 7
    assert s.flight_port == 3333
    assert s.http_port == 5555
    assert s.host == "127.0.0.1"


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidInput,
        match=r"^FLIGHTLAKE_FLIGHT_PORT='eighty': flight_port must be an integer \(0 to 65535\)$",
    ):
        load_settings(env={"FLIGHTLAKE_FLIGHT_PORT": "eighty"})
    conf = tmp_path / "c.toml"
    conf.write_text("nope = 1\n")
    with pytest.raises(InvalidInput, match="unknown setting 'nope'"):
        load_settings(conf, env={})
    conf.write_text("storage = \n")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        load_settings(conf, env={})
    with pytest.raises(InvalidInput, match="config file not found"):
        load_settings(tmp_path / "missing.toml", env={})


def test_secrets_file_and_aws_env(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(
        '[s3]\naccess_key_id = "AKFILE"\nsecret_access_key = "SFILE"\n'
        '[s3.query]\naccess_key_id = "AKREAD"\nsecret_access_key = "SREAD"\n'
        '[[tokens]]\nname = "dash"\ntoken = "tok-123"\nrole = "read"\n'
        '[[users]]\nusername = "etl"\npassword = "pw-456"\nrole = "write"\n'
    )
    s = load_settings(env={"FLIGHTLAKE_SECRETS_FILE": str(secrets)})
    assert s.credentials.access_key_id == "AKFILE"
    assert s.query_credentials.access_key_id == "AKREAD"
    assert [(p.name, p.role) for p in s.principals] == [("dash", "read"), ("etl", "write")]
    text = repr(s)
    for secret in ("SFILE", "SREAD", "tok-123", "pw-456"):
        assert secret not in text
    env = {
        "FLIGHTLAKE_SECRETS_FILE": str(secrets),
        "AWS_ACCESS_KEY_ID": "AKENV",
        "AWS_SECRET_ACCESS_KEY": "SENV",
    }
    assert load_settings(env=env).credentials.access_key_id == "AKENV"


def test_bad_role_and_missing_secrets_file(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[[tokens]]\nname = "x"\ntoken = "t"\nrole = "admin"\n')
    with pytest.raises(InvalidInput, match="role must be 'read' or 'write'"):
        load_settings(env={"FLIGHTLAKE_SECRETS_FILE": str(secrets)})
    with pytest.raises(InvalidInput, match="secrets file not found"):
        load_settings(env={"FLIGHTLAKE_SECRETS_FILE": str(tmp_path / "none.toml")})


def test_every_setting_has_a_field_and_help() -> None:
    fields = Settings.__dataclass_fields__
    for setting in SETTINGS:
        assert setting.name in fields, setting.name
        assert fields[setting.name].default == setting.default, setting.name
        assert setting.help.strip()
        assert setting.env == "FLIGHTLAKE_" + setting.name.upper()


# -- every setting is validated (issue 18: LOG_LEVEL=LOUD, BATCH_ROWS=0 ... started a server) --
def test_every_setting_declares_what_it_allows() -> None:
    """Validation is data: a setting without choices, a range or a check would go unchecked."""
    for setting in SETTINGS:
        declared = (
            setting.type is bool
            or setting.choices
            or setting.min is not None
            or setting.max is not None
            or setting.check is not None
        )
        assert declared, f"{setting.name} declares no choices, range or check"
        assert setting.allowed, f"{setting.name} cannot say what it allows"
        assert setting.problem(setting.default) is None, f"{setting.name}'s default is refused"


BAD_VALUES = [
    # (setting, value, what the message must say is allowed): choices, int ranges, sizes, ...
    ("log_level", "LOUD", "one of debug, info, warning, error"),
    ("log_format", "xml", "one of text, json"),
    ("batch_rows", "0", "1 to 2147483647"),
    ("max_concurrent_ingests", "0", "at least 1"),
    ("max_list", "-5", "at least 1"),
    ("max_upload_bytes", "0", "at least 1"),
    ("query_threads", "-1", "0 to 1024"),
    ("flight_port", "65536", "0 to 65535"),
    ("http_port", "-1", "0 to 65535"),
    ("query_timeout", "0", "0.001 to"),
    ("query_timeout", "nan", "0.001 to"),
    ("gc_grace_seconds", "-1", "0 to"),
    ("session_ttl_seconds", "inf", "1 to"),
    ("query_memory_limit", "lots", "a size such as 2GB"),
    ("query_memory_limit", "2", "a size such as 2GB"),
    ("query_memory_limit", "2GBs", "a size such as 2GB"),
    ("query_memory_limit", "120%", "a size such as 2GB"),
    ("query_memory_limit", "1MB", "at least 16MB"),
    ("insecure", "maybe", "true or false"),
    ("storage", "s3://A_B/x", "s3://BUCKET[/PREFIX]"),
    ("storage", "gs://bucket", "a local folder, or s3://BUCKET[/PREFIX]"),
    ("s3_endpoint", "127.0.0.1:9000", "http://HOST[:PORT]"),
    ("host", "not a host", "an IP address"),
    ("batch_rows", "many", "an integer (1 to"),
]


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_VALUES)
def test_bad_environment_values_name_setting_value_and_what_is_allowed(
    name: str, value: str, allowed: str
) -> None:
    env_name = f"FLIGHTLAKE_{name.upper()}"
    with pytest.raises(InvalidInput) as info:
        load_settings(env={env_name: value})
    message = str(info.value)
    assert message.startswith(f"{env_name}={value!r}: {name} must be "), message
    assert allowed in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("log_level", "'LOUD'", "one of debug"),
        ("batch_rows", "0", "1 to 2147483647"),
        ("batch_rows", "1.5", "an integer"),
        ("flight_port", "true", "an integer"),
        ("query_memory_limit", "'500 parsecs'", "a size such as 2GB"),
        ("max_concurrent_ingests", "'four'", "an integer"),
    ],
)
def test_bad_config_file_values_name_the_file(
    tmp_path: Path, name: str, value: str, allowed: str
) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(f"{name} = {value}\n")
    with pytest.raises(InvalidInput) as info:
        load_settings(conf, env={})
    assert str(info.value).startswith(f"{conf}: {name}="), info.value
    assert f"{name} must be" in str(info.value)
    assert allowed in str(info.value)


def test_bad_flag_values_name_the_flag() -> None:
    with pytest.raises(InvalidInput, match=r"^--flight-port=70000: flight_port must be 0 to 65535"):
        load_settings(flags={"flight_port": 70000}, env={})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2GB", 2 * 10**9),
        ("2 GB", 2 * 10**9),
        ("500MiB", 500 * 2**20),
        ("1.5gb", 15 * 10**8),
        ("2 gigabytes", 2 * 10**9),
        ("4096MB", 4096 * 10**6),
        ("1TiB", 2**40),
    ],
)
def test_memory_sizes_read_like_duckdb(value: str, expected: int) -> None:
    assert parse_size(value) == expected
    assert load_settings(env={"FLIGHTLAKE_QUERY_MEMORY_LIMIT": value}).query_memory_limit == value


def test_memory_limit_percent_is_of_physical_memory() -> None:
    import os

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert parse_size("50%") == ram // 2
    assert load_settings(env={"FLIGHTLAKE_QUERY_MEMORY_LIMIT": "80%"}).query_memory_limit == "80%"


BYTE_SETTINGS = [s.name for s in SETTINGS if s.name.endswith("_bytes")]


@pytest.mark.parametrize("name", BYTE_SETTINGS)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("268435456", 268435456),
        ("268_435_456", 268435456),
        ("512MiB", 512 * 2**20),
        ("2GB", 2 * 10**9),
        ("1.5 GiB", 3 * 2**29),
        ("64kb", 64_000),
    ],
)
def test_byte_settings_take_sizes_with_units(name: str, value: str, expected: int) -> None:
    """Every *_bytes setting reads 512MiB as query_memory_limit does, from the environment
    and from the file (a TOML string); an integer in the file still works."""
    assert getattr(load_settings(env={f"FLIGHTLAKE_{name.upper()}": value}), name) == expected


def test_byte_sizes_in_the_file_and_their_errors(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('cache_bytes = "1GiB"\nmax_upload_bytes = 1048576\n')
    loaded = load_settings(conf, env={})
    assert (loaded.cache_bytes, loaded.max_upload_bytes) == (2**30, 2**20)
    assert load_settings(env={"FLIGHTLAKE_CACHE_BYTES": "0MiB"}).cache_bytes == 0  # off
    for bad in (
        "80%",
        "lots",
        "-1",
        "1e9",
        "12 parsecs",
        "_1",
        "1__0",
        "1_MiB",
        "\uff11",
        "\uff12GB",
    ):
        with pytest.raises(InvalidInput) as info:
            load_settings(env={"FLIGHTLAKE_CACHE_BYTES": bad})
        assert str(info.value) == (
            f"FLIGHTLAKE_CACHE_BYTES={bad!r}: cache_bytes must be a byte count or a size such "
            "as 512MiB or 2GB (0 to 4611686018427387904)"
        )
    for zero in ("0", "0MiB"):
        with pytest.raises(InvalidInput, match="max_upload_bytes must be at least 1"):
            load_settings(env={"FLIGHTLAKE_MAX_UPLOAD_BYTES": zero})
    conf.write_text("max_upload_bytes = true\n")  # the error shows the value as TOML has it
    with pytest.raises(InvalidInput, match=r": max_upload_bytes=true: max_upload_bytes must be"):
        load_settings(conf, env={})
    with pytest.raises(InvalidInput, match="must be 0 to 4611686018427387904"):
        load_settings(env={"FLIGHTLAKE_CACHE_BYTES": "9000000TB"})


def test_digits_of_other_scripts_are_not_numbers() -> None:
    for name, value in (
        ("FLIGHTLAKE_FLIGHT_PORT", "\uff18\uff18\uff11\uff15"),
        ("FLIGHTLAKE_QUERY_TIMEOUT", "\u0663"),
    ):
        with pytest.raises(InvalidInput, match="must be"):
            load_settings(env={name: value})
    with pytest.raises(InvalidInput, match="query_memory_limit must be a size"):
        load_settings(env={"FLIGHTLAKE_QUERY_MEMORY_LIMIT": "\uff12GB"})


def test_good_values_are_normalised() -> None:
    env = {
        "FLIGHTLAKE_LOG_LEVEL": "WARNING",
        "FLIGHTLAKE_LOG_FORMAT": "JSON",
        "FLIGHTLAKE_HOST": "[::1]",
        "FLIGHTLAKE_QUERY_TIMEOUT": "1_000",
    }
    s = load_settings(env=env)
    assert (s.log_level, s.log_format, s.host, s.query_timeout) == ("warning", "json", "::1", 1000)


def serve_cli(*args: str, env: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLIGHTLAKE, "serve", *args],
        env=env_without_flightlake(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (
            (),
            {"FLIGHTLAKE_LOG_LEVEL": "LOUD"},
            "error: FLIGHTLAKE_LOG_LEVEL='LOUD': log_level must be one of debug, info, "
            "warning, error",
        ),
        (
            (),
            {"FLIGHTLAKE_QUERY_MEMORY_LIMIT": "lots"},
            "error: FLIGHTLAKE_QUERY_MEMORY_LIMIT='lots': query_memory_limit must be a size "
            "such as 2GB, 500MiB or 1.5GB (KB/MB/GB/TB or KiB/MiB/GiB/TiB), or 80%",
        ),
        (
            ("--http-port", "99999"),
            {},
            "error: --http-port=99999: http_port must be 0 to 65535",
        ),
    ],
)
def test_serve_refuses_a_bad_setting_in_one_line(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], line: str
) -> None:
    """Through the real CLI: exit 1, exactly one line on stderr, no traceback, nothing bound."""
    result = serve_cli("--storage", str(tmp_path / "lake"), *args, env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == line
    assert not (tmp_path / "lake").exists()


def test_serve_refuses_a_bad_config_file_value(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text("[flightlake]\nbatch_rows = 0\n")
    result = serve_cli("--config", str(conf))
    assert result.returncode == 1
    expected = f"error: {conf}: batch_rows=0: batch_rows must be 1 to 2147483647"
    assert result.stderr.strip() == expected
