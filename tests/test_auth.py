"""Authentication, roles and TLS with real clients: pyarrow.flight (bearer headers and the
basic-auth handshake), the ADBC Flight SQL driver (username / password, authorization header,
TLS roots), httpx over HTTP and HTTPS, the CLI, and a real `flightlake serve` that refuses a
non-loopback address without credentials. Certificates are generated here with `openssl`."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import adbc_driver_flightsql.dbapi as dbapi
import adbc_driver_manager
import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from click.testing import CliRunner

from flightlake import auth as auth_module
from flightlake.app import build_flight_server, flight_location
from flightlake.auth import Authenticator, Credential, check_exposure, is_loopback
from flightlake.cli import main as cli_main
from flightlake.config import Settings, load_settings
from flightlake.errors import Forbidden, InvalidInput, Unauthenticated
from flightlake.flight.server import FlightServer
from flightlake.http import HttpServer, start_http
from flightlake.lake import Lake
from flightlake.secrets import Principal
from tests.helpers import free_port
from tests.servers import make_settings
from tests.subprocess_server import (
    FLIGHTLAKE,
    ServerProcess,
    answers_flight,
    env_without_flightlake,
    flightlake_serve,
)

READ_TOKEN = "read-token-0123456789"
WRITE_TOKEN = "write-token-0123456789"
PRINCIPALS = (
    Principal("dashboards", "read", token=READ_TOKEN),
    Principal("loader", "write", token=WRITE_TOKEN),
    Principal("etl", "write", password="etl-password"),
    # 10 bytes of "viewer:vpw": base64 needs padding, which Go clients (ADBC) leave out
    Principal("viewer", "read", password="vpw"),
)
TABLE = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": ["a", "b", "c"]})


def bearer(token: str) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])


def put(client: flight.FlightClient, name: str, options: flight.FlightCallOptions) -> None:
    writer, meta = client.do_put(flight.FlightDescriptor.for_path(name), TABLE.schema, options)
    with writer:
        writer.write_table(TABLE)
        writer.done_writing()
        meta.read()


# -- servers ------------------------------------------------------------------------------------
@dataclass
class Both:
    """Flight and HTTP over one lake and one Authenticator, wired the way `serve` wires them."""

    lake: Lake
    auth: Authenticator
    flight_server: FlightServer
    http_server: HttpServer
    settings: Settings

    @property
    def location(self) -> str:
        return flight_location(self.settings).rsplit(":", 1)[0] + f":{self.flight_server.port}"

    @property
    def url(self) -> str:
        return self.http_server.url


@contextmanager
def serving(settings: Settings) -> Iterator[Both]:
    """Flight (app.build_flight_server) and HTTP (start_http) sharing one Authenticator."""
    settings = settings.replace(host="127.0.0.1", flight_port=0, http_port=0)
    lake = Lake(settings)
    auth = Authenticator.from_settings(settings)
    server = build_flight_server(lake, settings, auth)
    http = None
    try:
        http = start_http(lake, settings, port=0, auth=auth)
        yield Both(lake, auth, server, http, settings)
    finally:
        if http is not None:
            http.stop()
        server.shutdown()
        lake.close()


@pytest.fixture
def secure(tmp_path: Path) -> Settings:
    folder = tmp_path / "lake"
    folder.mkdir()
    return make_settings(str(folder), principals=PRINCIPALS)


@pytest.fixture
def both(secure: Settings) -> Iterator[Both]:
    with serving(secure) as running:
        yield running


@pytest.fixture
def client(both: Both) -> Iterator[flight.FlightClient]:
    with flight.FlightClient(both.location) as c:
        yield c


# -- certificates -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throw-away CA and a server certificate it signed for 127.0.0.1 and localhost."""
    d = tmp_path_factory.mktemp("certs")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        "req", "-x509", *ec, "-days", "2", "-subj", "/CN=flightlake test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", "ca.key", "-out", "ca.pem",
        cwd=d,
    )  # fmt: skip
    openssl("req", "-new", *ec, "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
        cwd=d,
    )  # fmt: skip
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key")


@pytest.fixture
def tls(secure: Settings, certs: Certs) -> Iterator[Both]:
    with serving(secure.replace(tls_cert=str(certs.cert), tls_key=str(certs.key))) as running:
        yield running


# -- the Authenticator itself --------------------------------------------------------------------
def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_authenticator_names_the_principal_or_refuses() -> None:
    auth = Authenticator(PRINCIPALS)
    assert auth.from_header(f"Bearer {READ_TOKEN}").name == "dashboards"
    assert auth.from_header(f"bearer  {WRITE_TOKEN} ").role == "write"
    assert auth.from_header(basic("etl", "etl-password")).name == "etl"
    unpadded = basic("viewer", "vpw").rstrip("=")
    assert auth.from_header(unpadded).name == "viewer"
    for header in (
        "",
        "Bearer",
        "Bearer nope",
        f"Token {READ_TOKEN}",
        basic("etl", "wrong"),
        basic("nobody", "etl-password"),
        basic("dashboards", READ_TOKEN),  # a token is not a password
        f"Bearer {PRINCIPALS[2].password}",  # nor a password a token
        "Basic !!!not-base64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
    ):
        with pytest.raises(Unauthenticated):
            auth.from_header(header)


def test_roles() -> None:
    auth = Authenticator(PRINCIPALS)
    read, write = PRINCIPALS[0], PRINCIPALS[1]
    auth.require(read)
    auth.require(write, write=True)
    with pytest.raises(Forbidden, match="needs role 'write'"):
        auth.require(read, write=True)
    with pytest.raises(Unauthenticated):
        auth.require(None)
    assert auth.authorize(f"Bearer {WRITE_TOKEN}", write=True) == write
    off = Authenticator(())
    assert not off.enabled
    assert off.authorize("", write=True) is None
    off.require(None, write=True)


def test_session_tokens_expire_and_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    auth = Authenticator(PRINCIPALS, session_ttl=60, clock=lambda: now[0])
    principal, token = auth.login(basic("viewer", "vpw"))
    assert principal.name == "viewer"
    assert token is not None
    assert auth.login(f"Bearer {READ_TOKEN}")[1] is None  # only basic logins get a session
    assert auth.from_header(f"Bearer {token}").name == "viewer"
    now[0] += 61
    with pytest.raises(Unauthenticated, match="expired"):
        auth.from_header(f"Bearer {token}")
    assert auth.session_count == 0

    monkeypatch.setattr(auth_module, "MAX_SESSIONS", 3)
    tokens = [auth.issue(PRINCIPALS[2]) for _ in range(5)]
    assert auth.session_count == 3
    with pytest.raises(Unauthenticated):
        auth.from_header(f"Bearer {tokens[0]}")  # the oldest was forgotten
    assert auth.from_header(f"Bearer {tokens[-1]}").name == "etl"


def test_secrets_stay_out_of_repr() -> None:
    text = repr(PRINCIPALS) + repr(Credential.parse(f"Bearer {READ_TOKEN}").scheme)
    assert READ_TOKEN not in text
    assert "etl-password" not in text


# -- Flight with pyarrow -------------------------------------------------------------------------
def test_flight_without_or_with_a_wrong_token_is_unauthenticated(
    client: flight.FlightClient,
) -> None:
    wrong = bearer("not-a-token")
    for options in (flight.FlightCallOptions(), wrong):
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(client.list_flights(options=options))
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.do_get(flight.Ticket(b"SELECT 1"), options).read_all()
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(client.do_action(flight.Action("health", b""), options))
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.list_actions(options)
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.get_flight_info(flight.FlightDescriptor.for_command(b"SELECT 1"), options)
        with pytest.raises(flight.FlightUnauthenticatedError):
            put(client, "t", options)


def test_flight_read_token_reads_but_cannot_write(both: Both, client: flight.FlightClient) -> None:
    read, write = bearer(READ_TOKEN), bearer(WRITE_TOKEN)
    put(client, "t", write)
    assert [i.descriptor.path for i in client.list_flights(options=read)] == [[b"t"]]
    info = client.get_flight_info(flight.FlightDescriptor.for_path("t"), read)
    assert info.total_records == 3
    assert client.do_get(info.endpoints[0].ticket, read).read_all().num_rows == 3
    assert client.do_get(flight.Ticket(b"SELECT sum(id) AS s FROM t"), read).read_all()[
        "s"
    ].to_pylist() == [6]
    assert client.get_schema(flight.FlightDescriptor.for_path("t"), read).schema == TABLE.schema
    assert json.loads(next(client.do_action(flight.Action("health", b""), read)).body.to_pybytes())
    assert "drop" in [a.type for a in client.list_actions(read)]

    with pytest.raises(flight.FlightUnauthorizedError, match="'dashboards' has role 'read'"):
        put(client, "t", read)
    with pytest.raises(flight.FlightUnauthorizedError):
        put(client, "new", read)
    for action in (flight.Action("drop", b"t"), flight.Action("gc", b"0")):
        with pytest.raises(flight.FlightUnauthorizedError):
            list(client.do_action(action, read))
    assert both.lake.dataset("t").row_count == 3  # nothing was written or dropped
    assert [m.name for m in both.lake.datasets()] == ["t"]

    assert json.loads(next(client.do_action(flight.Action("gc", b"0"), write)).body.to_pybytes())
    list(client.do_action(flight.Action("drop", b"t"), write))
    assert both.lake.datasets() == []


def test_flight_basic_auth_handshake_returns_a_session_token(
    both: Both, client: flight.FlightClient
) -> None:
    key, value = client.authenticate_basic_token("etl", "etl-password")
    assert key == b"authorization"
    assert value.startswith(b"Bearer ")
    session = value.decode().split(" ", 1)[1]
    assert session not in (READ_TOKEN, WRITE_TOKEN)
    put(client, "t", flight.FlightCallOptions(headers=[(key, value)]))
    assert both.lake.dataset("t").row_count == 3

    # a read user's session keeps the read role
    viewer = flight.FlightCallOptions(headers=[client.authenticate_basic_token("viewer", "vpw")])
    assert client.do_get(flight.Ticket(b"SELECT count(*) AS n FROM t"), viewer).read_all()[
        "n"
    ].to_pylist() == [3]
    with pytest.raises(flight.FlightUnauthorizedError):
        put(client, "t", viewer)

    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("etl", "wrong")
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("nobody", "etl-password")
    assert both.auth.session_count == 2  # failed handshakes issue nothing


def test_flight_basic_header_on_any_call(client: flight.FlightClient) -> None:
    options = flight.FlightCallOptions(
        headers=[(b"authorization", basic("viewer", "vpw").encode())]
    )
    assert list(client.list_flights(options=options)) == []


def test_no_principals_means_no_authentication(tmp_path: Path) -> None:
    with (
        serving(make_settings(str(tmp_path))) as running,
        flight.FlightClient(running.location) as c,
    ):
        put(c, "t", flight.FlightCallOptions())
        list(c.do_action(flight.Action("drop", b"t")))
        assert httpx.get(running.url + "/v1/datasets").json() == []


# -- Flight SQL with ADBC -----------------------------------------------------------------------
def adbc(location: str, **db_kwargs: str) -> dbapi.Connection:
    return dbapi.connect(location, db_kwargs=db_kwargs, autocommit=True)


def test_adbc_username_password(both: Both) -> None:
    with adbc(both.location, username="etl", password="etl-password") as conn, conn.cursor() as cur:
        cur.adbc_ingest("t", TABLE, mode="create")
        cur.execute("SELECT count(*) AS n FROM t")
        assert cur.fetchall() == [(3,)]
    with adbc(both.location, username="viewer", password="vpw") as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM t WHERE id = ?", parameters=(2,))  # binding is a read
        assert cur.fetchall() == [("b",)]
        with pytest.raises(adbc_driver_manager.ProgrammingError, match="UNAUTHORIZED"):
            cur.adbc_ingest("t", TABLE, mode="append")
    assert both.lake.dataset("t").row_count == 3
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="UNAUTHENTICATED"):
        adbc(both.location, username="etl", password="wrong")
    with (
        pytest.raises(adbc_driver_manager.ProgrammingError, match="UNAUTHENTICATED"),
        adbc(both.location) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT 1")


def test_adbc_authorization_header(both: Both) -> None:
    header = "adbc.flight.sql.authorization_header"
    with adbc(both.location, **{header: f"Bearer {WRITE_TOKEN}"}) as conn, conn.cursor() as cur:
        cur.adbc_ingest("t", TABLE, mode="create")
    with adbc(both.location, **{header: f"Bearer {READ_TOKEN}"}) as conn, conn.cursor() as cur:
        cur.execute("SELECT sum(id) AS s FROM t")
        assert cur.fetch_arrow_table()["s"].to_pylist() == [6]
        with pytest.raises(adbc_driver_manager.ProgrammingError, match="UNAUTHORIZED"):
            cur.adbc_ingest("t", TABLE, mode="append")
    with (
        pytest.raises(adbc_driver_manager.ProgrammingError, match="UNAUTHENTICATED"),
        adbc(both.location, **{header: "Bearer wrong"}) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT 1")


# -- HTTP -------------------------------------------------------------------------------------
def test_http_bearer_tokens_and_flight_session_tokens(
    both: Both, client: flight.FlightClient
) -> None:
    with httpx.Client(base_url=both.url, timeout=30) as http:
        assert http.get("/v1/datasets").status_code == 401
        assert http.get("/v1/datasets", headers={"authorization": "Bearer nope"}).status_code == 401
        read = {"authorization": f"Bearer {READ_TOKEN}"}
        assert http.get("/v1/datasets", headers=read).json() == []
        csv = b"id,name\n1,a\n"
        assert http.post("/v1/ingest?name=h", content=csv, headers=read).status_code == 403

        _, value = client.authenticate_basic_token("etl", "etl-password")  # a Flight session
        session = {"authorization": value.decode()}
        done = http.post("/v1/ingest?name=h", content=csv, headers=session)
        assert done.status_code == 200, done.text
        _, viewer = client.authenticate_basic_token("viewer", "vpw")
        got = http.post(
            "/v1/sql", json={"sql": "SELECT * FROM h"}, headers={"authorization": viewer.decode()}
        )
        assert got.json() == [{"id": 1, "name": "a"}]
        assert (
            http.delete("/v1/datasets/h", headers={"authorization": viewer.decode()}).status_code
            == 403
        )
        assert http.get("/health").status_code == 200  # health checks need no token


# -- TLS --------------------------------------------------------------------------------------
def test_flight_over_tls(tls: Both, certs: Certs) -> None:
    assert tls.location.startswith("grpc+tls://127.0.0.1:")
    roots = certs.ca.read_bytes()
    for host in ("127.0.0.1", "localhost"):
        location = f"grpc+tls://{host}:{tls.flight_server.port}"
        with flight.FlightClient(location, tls_root_certs=roots) as c:
            put(c, "t", bearer(WRITE_TOKEN))
            assert (
                c.do_get(flight.Ticket(b"SELECT * FROM t"), bearer(READ_TOKEN)).read_all() == TABLE
            )
            with pytest.raises(flight.FlightUnauthenticatedError):
                list(c.list_flights())
            list(c.do_action(flight.Action("drop", b"t"), bearer(WRITE_TOKEN)))

    with flight.FlightClient(tls.location, tls_root_certs=roots) as c:
        options = flight.FlightCallOptions(headers=[c.authenticate_basic_token("viewer", "vpw")])
        assert list(c.list_flights(options=options)) == []
    # plaintext against the TLS port, and TLS without trusting the CA, are refused
    plain = f"grpc://127.0.0.1:{tls.flight_server.port}"
    with flight.FlightClient(plain) as c, pytest.raises(flight.FlightUnavailableError):
        list(c.list_flights(options=bearer(READ_TOKEN)))
    with flight.FlightClient(tls.location) as c, pytest.raises(flight.FlightUnavailableError):
        list(c.list_flights(options=bearer(READ_TOKEN)))


def test_adbc_over_tls(tls: Both, certs: Certs) -> None:
    roots = "adbc.flight.sql.client_option.tls_root_certs"
    with (
        adbc(
            tls.location, username="etl", password="etl-password", **{roots: certs.ca.read_text()}
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.adbc_ingest("t", TABLE, mode="create")
        cur.execute("SELECT max(name) AS m FROM t")
        assert cur.fetchall() == [("c",)]
    with pytest.raises(adbc_driver_manager.Error):
        adbc(tls.location, username="etl", password="etl-password")  # CA not trusted


def test_https(tls: Both, certs: Certs) -> None:
    assert tls.url.startswith("https://")
    read = {"authorization": f"Bearer {READ_TOKEN}"}
    with httpx.Client(base_url=tls.url, verify=str(certs.ca), timeout=30) as http:
        assert http.get("/health").json()["status"] == "ok"
        assert http.get("/v1/datasets").status_code == 401
        assert http.post("/v1/sql", json={"sql": "SELECT 1 AS x"}, headers=read).json() == [
            {"x": 1}
        ]
    localhost = tls.url.replace("127.0.0.1", "localhost")
    assert httpx.get(localhost + "/v1/datasets", headers=read, verify=str(certs.ca)).json() == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(tls.url + "/health")  # the CA is not trusted by default
    plain = tls.url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(plain + "/health", timeout=10)


# -- the CLI ----------------------------------------------------------------------------------
def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli_main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_cli_credentials_and_tls(tls: Both, certs: Certs, tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("id,name\n1,a\n2,b\n")
    server = ["--server", tls.location, "--tls-ca", str(certs.ca)]
    code, _, err = run_cli("datasets", *server)
    assert code == 1
    assert err.startswith("error: missing credentials")
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli("ingest", str(csv), "--name", "t", *server, "--token", READ_TOKEN)
    assert code == 1
    assert "needs role 'write'" in err
    code, out, err = run_cli(
        "ingest", str(csv), "--name", "t", *server, "--user", "etl", "--password", "etl-password"
    )
    assert code == 0, err
    assert "2 rows written" in out
    env = {"FLIGHTLAKE_TOKEN": READ_TOKEN, "FLIGHTLAKE_TLS_CA": str(certs.ca)}
    code, out, err = run_cli(
        "sql", "SELECT count(*) AS n FROM t", "--format", "json", "--server", tls.location, env=env
    )
    assert (code, json.loads(out)) == (0, {"n": 2}), err
    code, _, err = run_cli("drop", "t", "--server", tls.location, env=env)
    assert code == 1
    assert "needs role 'write'" in err
    env = {"FLIGHTLAKE_USER": "etl", "FLIGHTLAKE_PASSWORD": "etl-password"}
    assert run_cli("drop", "t", *server, env=env)[:2] == (0, "dropped t\n")
    assert run_cli("gc", *server, "--token", WRITE_TOKEN)[0] == 0
    code, _, err = run_cli("datasets", *server, "--token", WRITE_TOKEN, "--user", "etl")
    assert code == 2
    assert "not both" in err
    code, _, err = run_cli("datasets", "--server", tls.location, "--token", READ_TOKEN)
    assert code == 1  # the server's CA is not trusted without --tls-ca


# -- where `serve` may listen -------------------------------------------------------------------
def test_loopback() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "192.0.2.1", "10.0.0.1", "2001:db8::1", "no-such.invalid"):
        assert not is_loopback(host), host


def test_check_exposure() -> None:
    base = Settings()
    assert check_exposure(base) is None
    assert check_exposure(base.replace(host="127.0.0.2")) is None
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        with pytest.raises(InvalidInput, match=r"without authentication.*--insecure"):
            check_exposure(base.replace(host=host))
        warning = check_exposure(base.replace(host=host, insecure=True))
        assert warning is not None
        assert "NO authentication" in warning
        tokens = base.replace(host=host, principals=PRINCIPALS)
        assert "clear text" in (check_exposure(tokens) or "")
        assert check_exposure(tokens.replace(tls_cert="c.pem", tls_key="k.pem")) is None


def test_insecure_setting_parses_from_the_environment() -> None:
    for value, expected in (("1", True), ("true", True), ("yes", True), ("0", False), ("", False)):
        assert load_settings(env={"FLIGHTLAKE_INSECURE": value}).insecure is expected
    with pytest.raises(InvalidInput, match="true or false"):
        load_settings(env={"FLIGHTLAKE_INSECURE": "maybe"})


def serve_cmd(tmp_path: Path, *args: str) -> list[str]:
    return [
        *FLIGHTLAKE, "serve", "--storage", str(tmp_path / "lake"),
        "--flight-port", str(free_port()), "--http-port", str(free_port()), *args,
    ]  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    return env_without_flightlake({"FLIGHTLAKE_SECRETS_FILE": "", **extra})


def test_serve_refuses_a_non_loopback_host_without_credentials(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: even a broken check could not listen.
    result = subprocess.run(
        serve_cmd(tmp_path, "--host", "192.0.2.1"),
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "refusing to listen on '192.0.2.1' without authentication" in result.stderr
    assert "--insecure" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "lake").exists()  # refused before anything was built


@pytest.mark.parametrize("how", ["flag", "env"])
def test_serve_insecure_warns_and_goes_on(tmp_path: Path, how: str) -> None:
    args = ["--insecure"] if how == "flag" else []
    env = clean_env() if how == "flag" else clean_env(FLIGHTLAKE_INSECURE="1")
    result = subprocess.run(
        serve_cmd(tmp_path, "--host", "192.0.2.1", *args),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # past the check, so it goes on to bind, which fails: the address is on no interface
    assert "--insecure: listening on '192.0.2.1' with NO authentication" in result.stderr
    assert "WARNING" in result.stderr
    assert result.returncode == 1
    assert "refusing" not in result.stderr


def test_serve_on_another_loopback_address_needs_no_insecure(tmp_path: Path) -> None:
    with flightlake_serve(
        "--storage",
        str(tmp_path / "lake"),
        env=clean_env(),
        cwd=tmp_path,
        host="127.0.0.2",
        http_port=0,
    ) as served:
        assert served.flight.startswith("grpc://127.0.0.2:")
        assert answers_flight(served)


def test_serve_with_tokens_and_tls_end_to_end(tmp_path: Path, certs: Certs) -> None:
    """The real `flightlake serve`: secrets file, TLS on both ports, every client."""
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(
        f'[[tokens]]\nname = "dash"\ntoken = "{READ_TOKEN}"\nrole = "read"\n'
        '[[users]]\nusername = "etl"\npassword = "etl-password"\nrole = "write"\n'
    )
    flight_port, http_port = free_port(), free_port()
    env = clean_env(FLIGHTLAKE_SECRETS_FILE=str(secrets))
    location = f"grpc+tls://localhost:{flight_port}"
    url = f"https://localhost:{http_port}"

    def ready(_: ServerProcess) -> bool:
        return httpx.get(url + "/health", verify=str(certs.ca), timeout=5).status_code == 200

    with flightlake_serve(
        "--storage",
        str(tmp_path / "lake"),
        "--tls-cert",
        str(certs.cert),
        "--tls-key",
        str(certs.key),
        env=env,
        cwd=tmp_path,
        flight_port=flight_port,
        http_port=http_port,
        ready=ready,
    ) as served:
        roots = certs.ca.read_bytes()
        with flight.FlightClient(location, tls_root_certs=roots) as c:
            with pytest.raises(flight.FlightUnauthenticatedError):
                list(c.list_flights())
            session = c.authenticate_basic_token("etl", "etl-password")
            put(c, "t", flight.FlightCallOptions(headers=[session]))
            with pytest.raises(flight.FlightUnauthorizedError):
                put(c, "t", bearer(READ_TOKEN))
        with (
            flight.FlightClient(f"grpc://localhost:{flight_port}") as c,
            pytest.raises(flight.FlightUnavailableError),
        ):
            list(c.list_flights(options=bearer(READ_TOKEN)))
        headers = {"authorization": session[1].decode()}  # the Flight session works on HTTP
        got = httpx.get(url + "/v1/datasets/t", headers=headers, verify=str(certs.ca))
        assert got.json()["row_count"] == 3
        assert httpx.get(url + "/v1/datasets", verify=str(certs.ca)).status_code == 401
        with (
            adbc(
                location,
                username="etl",
                password="etl-password",
                **{"adbc.flight.sql.client_option.tls_root_certs": certs.ca.read_text()},
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT count(*) AS n FROM t")
            assert cur.fetchall() == [(3,)]
    assert served.proc.returncode == 0
