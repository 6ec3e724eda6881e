"""Settings: defaults < config file < FLIGHTLAKE_* environment < flags; secrets stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from flightlake.config import SETTINGS, Settings, load_settings
from flightlake.errors import InvalidInput


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
    with pytest.raises(InvalidInput, match="FLIGHTLAKE_FLIGHT_PORT: flight_port must be int"):
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
