"""The web console in a real browser: Debian's chromium + chromium-driver, driven by Selenium.

One headless browser per module; two real servers (authentication off, and on with a read
and a write principal) over real lakes on local disk. Screenshots are saved under
.pytest_cache/d/console-screenshots. `make test` installs chromium when it is missing
(scripts/install_test_deps.sh).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from flightlake.config import Settings
from flightlake.lake import Lake
from flightlake.secrets import Principal
from tests.http_helpers import RunningHttp, http_server

WAIT = 30  # seconds: a generous upper bound for a page or a swap, never a measurement
XSS_SCRIPT = "<script>window.__pwned=1</script>"
XSS_IMG = '<img src=x onerror="window.__pwned=2">'
XSS_SVG = "<svg onload=window.__pwned=3>"
READ_TOKEN = "console-read-token-0123456789"
WRITE_TOKEN = "console-write-token-0123456789"
PRINCIPALS = (
    Principal("dash", "read", token=READ_TOKEN),
    Principal("loader", "write", token=WRITE_TOKEN),
    Principal("viewer", "read", password="viewer-pw"),
    Principal("etl", "write", password="etl-pw"),
)


# -- fixtures ----------------------------------------------------------------------------------
def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        f"{' / '.join(names)} not found: run scripts/install_test_deps.sh "
        "(apt-get install chromium chromium-driver), or `make test` as root"
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests may run as root (CI)
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=options, service=Service(executable_path=_binary("chromedriver"))
    )
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """.pytest_cache/d/console-screenshots, or a temp folder without the cache plugin."""
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    if cache is None:
        return tmp_path_factory.mktemp("console-screenshots")
    return Path(cache.mkdir("console-screenshots"))


def _lake_with_data(storage: str, **changes: Any) -> tuple[Settings, Lake]:
    # in-process: the memory ceiling would watch pytest's own memory (see tests/servers.py)
    settings = Settings(storage=storage, **{"max_server_memory_bytes": 1 << 40, **changes})
    lake = Lake(settings)
    cities = pa.table(
        {
            "city": ["Lisbon", "Oslo", "Quito", "Hanoi"],
            "population": [545_000, 709_000, 2_800_000, 8_050_000],
            "area_km2": [100.05, 454.0, 372.4, 3358.6],
        }
    )
    lake.ingest_arrow("cities", cities.schema, iter(cities.to_batches()), "create")
    days = pa.table(
        {
            "day": pa.array([f"2024-01-{d:02d}" for d in range(1, 8)]).cast(pa.date32()),
            "sales": [5, 9, 4, 12, 7, 15, 11],
        }
    )
    lake.ingest_arrow("daily", days.schema, iter(days.to_batches()), "create")
    big = pa.table({"n": pa.array(range(12_345), pa.int64())})
    lake.ingest_arrow("numbers", big.schema, iter(big.to_batches()), "create")
    hostile = pa.table(
        {
            "note": [XSS_SCRIPT, XSS_IMG, XSS_SVG],
            "<b>col</b>": ["a", "b", "c"],
        }
    )
    lake.ingest_arrow("hostile", hostile.schema, iter(hostile.to_batches()), "create")
    return settings, lake


@pytest.fixture(scope="module")
def open_server() -> Iterator[RunningHttp]:
    """Authentication off; uploads capped at 1 MiB so the 413 path is cheap to reach."""
    with tempfile.TemporaryDirectory(prefix="flightlake-console-") as root:
        settings, lake = _lake_with_data(root, max_upload_bytes=1 << 20)
        try:
            with http_server(lake, settings) as running:
                yield running
        finally:
            lake.close()


@pytest.fixture(scope="module")
def auth_server() -> Iterator[RunningHttp]:
    with tempfile.TemporaryDirectory(prefix="flightlake-console-auth-") as root:
        settings, lake = _lake_with_data(root, principals=PRINCIPALS)
        try:
            with http_server(lake, settings) as running:
                yield running
        finally:
            lake.close()


# -- helpers -----------------------------------------------------------------------------------
def wait_for(driver: WebDriver, css: str) -> WebElement:
    """The first element matching ``css`` once it is there; on a timeout the failure names the
    page the browser shows and the start of its text (a browser error page, a stale form)."""
    try:
        return WebDriverWait(driver, WAIT).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, css))
        )
    except TimeoutException:
        text = driver.execute_script("return document.body ? document.body.innerText : ''")
        raise AssertionError(
            f"no {css!r} after {WAIT} s on {driver.current_url} ({driver.title!r}): {text[:600]!r}"
        ) from None


def fill_upload(driver: WebDriver, base: str, name: str, path: Path) -> None:
    """Open /upload, wait until htmx is loaded, and fill in the dataset name and the file."""
    driver.get(f"{base}/upload")
    wait_for(driver, "#upload-form")
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script("return !!window.htmx"))
    driver.find_element(By.NAME, "name").send_keys(name)
    driver.find_element(By.NAME, "file").send_keys(str(path))


def button(driver: WebDriver, text: str) -> WebElement:
    return driver.find_element(By.XPATH, f"//button[normalize-space()='{text}']")


def run_sql(driver: WebDriver, base: str, sql: str) -> None:
    """Type ``sql`` into the form's field ``sql`` and press Run; wait for the swap."""
    driver.get(f"{base}/sql")
    wait_for(driver, "script[src='/static/htmx.min.js']")
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script("return !!window.htmx"))
    old = driver.find_element(By.ID, "result")
    field = driver.find_element(By.NAME, "sql")
    field.clear()
    field.send_keys(sql)
    button(driver, "Run").click()
    WebDriverWait(driver, WAIT).until(ec.staleness_of(old))
    wait_for(driver, "#result")


def table_of(driver: WebDriver, css: str = "#result table") -> tuple[list[str], list[list[str]]]:
    table = driver.find_element(By.CSS_SELECTOR, css)
    head = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    rows = [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    return head, rows


def csp_violations(driver: WebDriver) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]
    ]


def sign_in(driver: WebDriver, base: str, **fields: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/")
    wait_for(driver, "#login-form")
    for name, value in fields.items():
        driver.find_element(By.NAME, name).send_keys(value)
    form = driver.find_element(By.ID, "login-form")
    button(driver, "Sign in").click()
    WebDriverWait(driver, WAIT).until(ec.staleness_of(form))  # the next page is loading


# -- authentication off --------------------------------------------------------------------------
def test_home_lists_every_dataset_with_rows_size_version(
    browser: WebDriver, open_server: RunningHttp, shots: Path
) -> None:
    browser.get(f"{open_server.url}/")
    table = wait_for(browser, "#datasets")
    assert "flightlake" in browser.title
    assert browser.find_element(By.CSS_SELECTOR, "header h1").text == "flightlake"
    head, rows = table_of(browser, "#datasets")
    assert head == ["Name", "Rows", "Size", "Version", "Last update"]
    by_name = {row[0]: row for row in rows}
    assert set(by_name) == {"cities", "daily", "numbers", "hostile"}
    assert by_name["numbers"][1] == "12,345"
    assert by_name["cities"][1] == "4"
    manifest = open_server.lake.dataset("numbers")
    assert by_name["numbers"][3] == str(manifest.version)
    assert by_name["numbers"][4] == manifest.updated_at
    assert by_name["numbers"][2].endswith(("B", "KiB", "MiB"))
    browser.save_screenshot(str(shots / "home.png"))
    table.find_element(By.LINK_TEXT, "cities").click()
    wait_for(browser, "#schema")
    assert browser.current_url == f"{open_server.url}/datasets/cities"
    assert table_of(browser, "#schema")[1] == [
        ["city", "string"],
        ["population", "int64"],
        ["area_km2", "double"],
    ]
    versions = table_of(browser, "#versions")[1]
    assert versions[0][0] == str(open_server.lake.dataset("cities").version)  # newest first
    assert versions[0][3] == "4"  # rows
    head, rows = table_of(browser, "table.result")
    assert head == ["city", "population", "area_km2"]
    assert rows[0] == ["Lisbon", "545000", "100.05"]
    browser.get(f"{open_server.url}/datasets/numbers")
    wait_for(browser, "table.result")
    assert len(table_of(browser, "table.result")[1]) == 100  # the first 100 rows only
    browser.save_screenshot(str(shots / "dataset.png"))
    assert csp_violations(browser) == []


def test_query_result_table_holds_the_values_and_downloads(
    browser: WebDriver, open_server: RunningHttp, shots: Path
) -> None:
    run_sql(
        browser, open_server.url, "SELECT city, population * 2 AS doubled FROM cities ORDER BY city"
    )
    head, rows = table_of(browser)
    assert head == ["city", "doubled"]
    assert rows == [
        ["Hanoi", "16100000"],
        ["Lisbon", "1090000"],
        ["Oslo", "1418000"],
        ["Quito", "5600000"],
    ]
    facts = browser.find_element(By.ID, "result-facts").text
    assert facts.startswith("4 rows in ")
    assert facts.endswith(" s · download the full result: CSV, Arrow, Parquet")
    assert "/sql?sql=" in browser.current_url  # htmx pushed the query into the address bar
    links = {
        a.text: a.get_attribute("href")
        for a in browser.find_elements(By.CSS_SELECTOR, "a.download")
    }
    assert set(links) == {"CSV", "Arrow", "Parquet"}
    csv = httpx.get(links["CSV"], timeout=WAIT)
    assert csv.status_code == 200
    assert csv.text.splitlines() == [
        '"city","doubled"',
        '"Hanoi",16100000',
        '"Lisbon",1090000',
        '"Oslo",1418000',
        '"Quito",5600000',
    ]
    arrow = httpx.get(links["Arrow"], timeout=WAIT)
    assert pa.ipc.open_stream(arrow.content).read_all().column("doubled").to_pylist() == [
        16100000,
        1090000,
        1418000,
        5600000,
    ]
    parquet = httpx.get(links["Parquet"], timeout=WAIT)
    assert "attachment" in parquet.headers["content-disposition"]
    assert pq.read_table(pa.BufferReader(parquet.content)).column("city").to_pylist() == [
        "Hanoi", "Lisbon", "Oslo", "Quito",
    ]  # fmt: skip


def test_result_past_the_display_cap_says_how_many_rows_are_not_shown(
    browser: WebDriver, open_server: RunningHttp
) -> None:
    run_sql(browser, open_server.url, "SELECT n FROM numbers ORDER BY n")
    _, rows = table_of(browser)
    assert len(rows) == 500
    assert rows[-1] == ["499"]
    assert browser.find_element(By.ID, "more-rows").text == "11,845 more rows not shown."
    assert browser.find_element(By.ID, "result-facts").text.startswith("12,345 rows in ")
    full = httpx.get(
        browser.find_element(By.LINK_TEXT, "CSV").get_attribute("href") or "", timeout=WAIT
    )
    assert len(full.text.splitlines()) == 12_346  # the download is the whole result


def test_bad_query_shows_its_message_without_a_traceback(
    browser: WebDriver, open_server: RunningHttp
) -> None:
    run_sql(browser, open_server.url, "SELEC city FROM cities")
    message = browser.find_element(By.ID, "error-message").text
    assert "syntax error" in message
    assert "Traceback" not in browser.page_source
    assert browser.find_elements(By.CSS_SELECTOR, "#result table") == []
    run_sql(browser, open_server.url, "SELECT * FROM no_such_table")
    assert "no_such_table" in browser.find_element(By.ID, "error-message").text
    # the sandbox holds on this path too: files are not readable from console SQL
    run_sql(browser, open_server.url, "SELECT * FROM read_csv('/etc/passwd')")
    message = browser.find_element(By.ID, "error-message").text
    assert "read_csv" in message
    assert "root:" not in browser.page_source


def test_two_column_aggregate_draws_a_bar_chart_and_dates_a_line(
    browser: WebDriver, open_server: RunningHttp, shots: Path
) -> None:
    run_sql(
        browser,
        open_server.url,
        "SELECT city, sum(population) AS people FROM cities GROUP BY city ORDER BY city",
    )
    chart = wait_for(browser, "#chart svg.chart-bar")
    bars = chart.find_elements(By.CSS_SELECTOR, "rect")
    assert len(bars) == 4
    heights = {
        b.find_element(By.TAG_NAME, "title").get_attribute("textContent"): float(
            b.get_attribute("height") or 0
        )
        for b in bars
    }
    assert (
        heights["Hanoi: people = 8,050,000"]
        > heights["Quito: people = 2,800,000"]
        > heights["Oslo: people = 709,000"]
    )
    assert browser.find_element(By.CSS_SELECTOR, "#chart figcaption").text.startswith("people")
    browser.save_screenshot(str(shots / "chart-bar.png"))
    run_sql(
        browser, open_server.url, "SELECT day, sales, sales * 2 AS target FROM daily ORDER BY day"
    )
    lines = wait_for(browser, "#chart svg.chart-line").find_elements(By.TAG_NAME, "polyline")
    assert len(lines) == 2
    assert len((lines[0].get_attribute("points") or "").split()) == 7
    browser.save_screenshot(str(shots / "chart-line.png"))
    run_sql(browser, open_server.url, "SELECT city, population, area_km2 FROM cities WHERE false")
    assert browser.find_elements(By.ID, "chart") == []  # nothing to draw
    run_sql(browser, open_server.url, "SELECT population, area_km2 FROM cities")
    assert browser.find_elements(By.ID, "chart") == []  # no label column
    assert csp_violations(browser) == []


def test_csv_upload_becomes_a_dataset(
    browser: WebDriver, open_server: RunningHttp, tmp_path: Path, shots: Path
) -> None:
    source = tmp_path / "planets.csv"
    source.write_text("planet,moons\nMercury,0\nEarth,1\nMars,2\nJupiter,95\n")
    fill_upload(browser, open_server.url, "planets", source)
    browser.execute_script(
        "window.__progress = [];"
        "document.addEventListener('htmx:xhr:progress', e => window.__progress.push("
        "[e.detail.loaded, e.detail.total]));"
    )
    button(browser, "Upload").click()
    ok = wait_for(browser, "#upload-ok")
    progress = browser.execute_script("return window.__progress")
    assert progress, "htmx reported no upload progress"
    assert progress[-1][0] == progress[-1][1] > source.stat().st_size  # the whole form went
    bar = browser.find_element(By.ID, "upload-progress")
    assert bar.get_attribute("value") == "100"  # console.js followed it
    assert bar.get_attribute("hidden") is not None  # and hid the bar when it ended
    manifest = open_server.lake.dataset("planets")
    assert ok.text == f"Wrote 4 rows to planets, version {manifest.version}."
    assert manifest.row_count == 4
    browser.save_screenshot(str(shots / "upload.png"))
    # the same form appends a Parquet file to it
    parquet = tmp_path / "more.parquet"
    pq.write_table(pa.table({"planet": ["Saturn"], "moons": pa.array([146], pa.int64())}), parquet)
    browser.find_element(By.NAME, "file").send_keys(str(parquet))
    old = browser.find_element(By.ID, "outcome")
    button(browser, "Upload").click()
    WebDriverWait(browser, WAIT).until(ec.staleness_of(old))  # htmx swapped the outcome
    again = open_server.lake.dataset("planets")
    assert wait_for(browser, "#upload-ok").text == (
        f"Wrote 1 row to planets, version {again.version}."
    )
    assert again.row_count == 5
    browser.get(f"{open_server.url}/")
    assert "planets" in [r[0] for r in table_of(browser, "#datasets")[1]]


def test_upload_errors_show_on_the_page(
    browser: WebDriver, open_server: RunningHttp, tmp_path: Path
) -> None:
    # Over the 1 MiB cap: the browser sends the whole body before it reads the answer, so the
    # server must read the rest, not reset the connection (CI once lost the 413 at 1.5 MiB).
    for rows in (90_000, 800_000):  # ~1.5 MiB and ~13 MiB
        big = tmp_path / "big.csv"
        big.write_text("a,b\n" + "1234567,abcdefgh\n" * rows)
        fill_upload(browser, open_server.url, "too_big", big)
        button(browser, "Upload").click()
        message = wait_for(browser, "#outcome #error-message").text
        assert "exceeds the 1048576-byte cap" in message
        assert open_server.lake.catalog.find("too_big") is None
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    fill_upload(browser, open_server.url, "cities", bad)
    button(browser, "Upload").click()  # mode append: the schema differs
    message = wait_for(browser, "#outcome #error-message").text
    assert "does not match the dataset" in message
    assert "Traceback" not in browser.page_source


def test_a_request_with_no_answer_says_so(
    browser: WebDriver, open_server: RunningHttp, tmp_path: Path
) -> None:
    """A lost connection (here: the browser goes offline) leaves a message, not a silent form."""
    small = tmp_path / "small.csv"
    small.write_text("a,b\n1,x\n")
    fill_upload(browser, open_server.url, "offline_upload", small)
    browser.set_network_conditions(offline=True, latency=0, throughput=1 << 20)
    try:
        button(browser, "Upload").click()
        message = wait_for(browser, "#outcome #error-message").text
        assert message.startswith(
            "The upload got no answer: the connection to the server was lost."
        )
        assert button(browser, "Upload").is_enabled()  # the form can be sent again
    finally:
        browser.delete_network_conditions()
    assert open_server.lake.catalog.find("offline_upload") is None
    browser.get(f"{open_server.url}/sql")
    wait_for(browser, "#sql-form")
    WebDriverWait(browser, WAIT).until(lambda d: d.execute_script("return !!window.htmx"))
    browser.set_network_conditions(offline=True, latency=0, throughput=1 << 20)
    try:
        browser.find_element(By.NAME, "sql").send_keys("SELECT 1")
        button(browser, "Run").click()
        assert wait_for(browser, "#result #error-message").text.startswith("No answer:")
    finally:
        browser.delete_network_conditions()


def test_hostile_values_show_as_text_and_never_run(
    browser: WebDriver, open_server: RunningHttp, shots: Path
) -> None:
    for path in ("/datasets/hostile", "/sql?sql=SELECT%20*%20FROM%20hostile", "/"):
        browser.get(f"{open_server.url}{path}")
        wait_for(browser, "main table")
        assert browser.execute_script("return window.__pwned") is None, path
        assert browser.find_elements(By.CSS_SELECTOR, "main img, main td script, main td svg") == []
    browser.get(f"{open_server.url}/sql?sql=SELECT%20*%20FROM%20hostile")
    head, rows = table_of(browser, "table.result")
    assert head == ["note", "<b>col</b>"]
    assert [row[0] for row in rows] == [XSS_SCRIPT, XSS_IMG, XSS_SVG]
    # through htmx's swap as well
    run_sql(browser, open_server.url, "SELECT note, count(*) AS n FROM hostile GROUP BY note")
    assert browser.execute_script("return window.__pwned") is None
    titles = [
        t.get_attribute("textContent")
        for t in browser.find_elements(By.CSS_SELECTOR, "#chart title")
    ]
    assert f"{XSS_SCRIPT}: n = 1" in titles
    browser.save_screenshot(str(shots / "escaped.png"))


def test_every_console_response_carries_the_csp(open_server: RunningHttp) -> None:
    for path in (
        "/",
        "/sql",
        "/upload",
        "/datasets/cities",
        "/datasets/nope",
        "/static/console.js",
    ):
        answer = open_server.client.get(path)
        csp = answer.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp, path
        assert "default-src 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert open_server.client.get("/datasets/nope").status_code == 404
    page = open_server.client.get("/").text
    assert "<script>" not in page  # no inline script: every <script> has a src
    assert "<script src=" in page


def test_forged_upload_without_the_csrf_token_is_refused(open_server: RunningHttp) -> None:
    with httpx.Client(base_url=open_server.url, timeout=WAIT) as client:
        client.get("/upload")  # a CSRF cookie, but the forged form does not know its value
        answer = client.post(
            "/upload",
            data={"csrf": "guess", "name": "forged", "mode": "append"},
            files={"file": ("f.csv", b"a\n1\n", "text/csv")},
        )
    assert answer.status_code == 403
    assert "CSRF" in answer.text
    assert open_server.lake.catalog.find("forged") is None


# -- authentication on ---------------------------------------------------------------------------
def test_sign_in_is_required_and_shows_nothing_before(
    browser: WebDriver, auth_server: RunningHttp, shots: Path
) -> None:
    base = auth_server.url.replace("127.0.0.1", "localhost")  # its own cookie jar
    for path in ("/", "/datasets/cities", "/sql?sql=SELECT%201", "/upload"):
        answer = httpx.get(f"{base}{path}", timeout=WAIT)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login")
        assert "cities" not in answer.text
    browser.delete_all_cookies()
    browser.get(f"{base}/datasets/cities")
    form = wait_for(browser, "#login-form")
    assert "cities" not in browser.find_element(By.TAG_NAME, "main").text
    assert form.find_elements(By.CSS_SELECTOR, "input[type=password][name=token]")
    assert form.find_elements(By.CSS_SELECTOR, "input[type=password][name=password]")
    browser.save_screenshot(str(shots / "login.png"))
    form.find_element(By.NAME, "token").send_keys("wrong-token")
    button(browser, "Sign in").click()
    assert "unknown or expired" in wait_for(browser, "#error-message").text
    browser.find_element(By.NAME, "token").send_keys(WRITE_TOKEN)
    button(browser, "Sign in").click()
    wait_for(browser, "#schema")  # back where the visitor was going
    assert browser.current_url == f"{base}/datasets/cities"
    session = next(c for c in browser.get_cookies() if c["name"] == "flightlake_session")
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert WRITE_TOKEN not in session["value"]  # a session token, not the secret
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: none readable
    assert browser.find_elements(By.LINK_TEXT, "Upload")
    button(browser, "Sign out").click()
    wait_for(browser, "#login-form")
    httpx_answer = httpx.get(
        f"{base}/", cookies={"flightlake_session": session["value"]}, timeout=WAIT
    )
    assert httpx_answer.status_code == 303  # the session ended with the sign-out
    sign_in(browser, base, username="etl", password="etl-pw")
    _, rows = table_of(browser, "#datasets")
    assert "cities" in [r[0] for r in rows]
    sign_in(browser, base, username="etl", password="wrong")
    assert "unknown or expired" in wait_for(browser, "#error-message").text


def test_read_role_sees_no_upload_and_a_forged_upload_is_refused(
    browser: WebDriver, auth_server: RunningHttp, tmp_path: Path
) -> None:
    base = auth_server.url.replace("127.0.0.1", "localhost")
    sign_in(browser, base, username="viewer", password="viewer-pw")
    wait_for(browser, "#datasets")
    assert browser.find_elements(By.LINK_TEXT, "Upload") == []
    assert browser.find_elements(By.ID, "upload-form") == []
    run_sql(browser, base, "SELECT count(*) AS n FROM cities")
    assert table_of(browser)[1] == [["4"]]  # reading works
    browser.get(f"{base}/upload")
    assert "role 'read'" in wait_for(browser, "#error-message").text
    assert browser.find_elements(By.ID, "upload-form") == []
    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    forged = httpx.post(
        f"{base}/upload",
        cookies=cookies,
        data={"csrf": cookies["flightlake_csrf"], "name": "forged", "mode": "append"},
        files={"file": ("f.csv", b"a\n1\n", "text/csv")},
        timeout=WAIT,
    )
    assert forged.status_code == 403
    no_session = httpx.post(
        f"{base}/upload",
        data={"name": "forged", "mode": "append"},
        files={"file": ("f.csv", b"a\n1\n", "text/csv")},
        timeout=WAIT,
    )
    assert no_session.status_code == 401
    assert auth_server.lake.catalog.find("forged") is None
    sign_in(browser, base, token=WRITE_TOKEN)
    wait_for(browser, "#datasets")
    source = tmp_path / "ok.csv"
    source.write_text("k\n1\n2\n")
    browser.get(f"{base}/upload")
    wait_for(browser, "#upload-form")
    WebDriverWait(browser, WAIT).until(lambda d: d.execute_script("return !!window.htmx"))
    browser.find_element(By.NAME, "name").send_keys("written")
    browser.find_element(By.NAME, "file").send_keys(str(source))
    button(browser, "Upload").click()
    assert wait_for(browser, "#upload-ok").text.startswith("Wrote 2 rows to written")
    assert csp_violations(browser) == []


def test_sign_in_guards_redirects_csrf_and_htmx(auth_server: RunningHttp) -> None:
    base = auth_server.url
    with httpx.Client(base_url=base, timeout=WAIT) as client:
        page = client.get("/login?next=//evil.example/x")
        assert page.status_code == 200
        csrf = client.cookies["flightlake_csrf"]
        refused = client.post("/login", data={"token": WRITE_TOKEN})  # no CSRF field
        assert refused.status_code == 403
        assert "flightlake_session" not in client.cookies
        signed = client.post(
            "/login?next=//evil.example/x", data={"csrf": csrf, "token": WRITE_TOKEN}
        )
        assert signed.status_code == 303
        assert signed.headers["location"] == "/"  # never another site
        assert "httponly" in signed.headers["set-cookie"].lower()
        assert "samesite=strict" in signed.headers["set-cookie"].lower()
        assert client.get("/").status_code == 200
    # htmx asking with no session is told to load the sign-in page
    answer = httpx.get(f"{base}/sql?sql=SELECT%201", headers={"HX-Request": "true"}, timeout=WAIT)
    assert answer.status_code == 401
    assert answer.headers["HX-Redirect"].startswith("/login")
    assert httpx.get(f"{base}/sql/download?sql=SELECT%201", timeout=WAIT).status_code == 303


def test_list_cap_note_and_busy_ingest_slots(tmp_path: Path) -> None:
    settings, lake = _lake_with_data(str(tmp_path), max_list=2, max_concurrent_ingests=1)
    try:
        with http_server(lake, settings) as running:
            home = running.client.get("/")
            assert home.text.count('href="/datasets/') == 2
            assert "The list stops at 2 datasets" in home.text
            running.client.get("/upload")
            csrf = running.client.cookies["flightlake_csrf"]
            with lake.ingest_slot("elsewhere"):  # the one slot is taken
                busy = running.client.post(
                    "/upload",
                    data={"csrf": csrf, "name": "late", "mode": "append"},
                    files={"file": ("late.csv", b"a\n1\n", "text/csv")},
                )
            assert busy.status_code == 503
            assert busy.headers["Retry-After"]
            assert "ingest slots are busy" in busy.text
            assert lake.catalog.find("late") is None
    finally:
        lake.close()


def test_every_console_asset_is_package_data() -> None:
    """The wheel ships what pyproject's package-data names: every template and static file
    must match its patterns (a file in a new subfolder would silently miss the wheel)."""
    import tomllib

    import flightlake.console

    root = Path(flightlake.console.__file__).parent
    pyproject = tomllib.loads((root.parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["flightlake.console"]
    assets = [
        p.relative_to(root).as_posix()
        for folder in ("templates", "static")
        for p in (root / folder).rglob("*")
        if p.is_file()
    ]
    assert len(assets) >= 12

    def shipped(asset: str) -> bool:  # setuptools globs: '*' stops at '/'
        path = PurePosixPath(asset)
        return any(
            path.match(p) and len(path.parts) == len(PurePosixPath(p).parts) for p in patterns
        )

    missed = [a for a in assets if not shipped(a)]
    assert missed == []
    assert "static/htmx.min.js" in assets


def test_chart_geometry_for_negatives_nulls_decimals_and_long_results() -> None:
    from decimal import Decimal

    from flightlake.console.results import CHART_POINTS, chart_of

    mixed = pa.table(
        {
            "k": ["up", "down", "none"],
            "v": pa.array([Decimal("2.50"), Decimal("-1.25"), None], pa.decimal128(10, 2)),
        }
    )
    chart = chart_of(mixed)
    assert chart is not None
    assert chart.kind == "bar"
    bars = chart.series[0].bars
    assert [title for *_, title in bars] == ["up: v = 2.5", "down: v = -1.25"]  # NULL: no bar
    (_, up_y, _, up_h, _), (_, down_y, _, down_h, _) = bars
    assert up_y + up_h == pytest.approx(chart.zero)  # a positive bar stands on zero
    assert down_y == chart.zero  # a negative one hangs from it
    assert up_h > down_h > 0
    long = pa.table({"t": pa.array(range(100), pa.timestamp("s")), "n": list(range(100))})
    line = chart_of(long)
    assert line is not None
    assert line.kind == "line"
    assert len(line.series[0].points.split()) == CHART_POINTS
    assert (line.points_shown, line.points_total) == (CHART_POINTS, 100)
    assert chart_of(pa.table({"a": ["x"], "b": ["y"], "n": [1]})) is None  # two labels
    assert chart_of(pa.table({"a": ["x"], "n": pa.array([None], pa.int64())})) is None
