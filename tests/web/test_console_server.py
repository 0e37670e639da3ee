"""The console server: its decisions (which file, which headers) as pure functions, then the real
server started as a process on a free port (headers, client-route fallback, gzip, caching, health,
metrics, SIGTERM)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from uplion.console.config import ConsoleConfig, split_listen
from uplion.console.files import Kind, choose, content_type, normalize
from uplion.console.headers import CSP, IMMUTABLE, NO_CACHE, SHORT, accepts_gzip, cache_control, is_hashed_asset
from uplion.core.config import ConfigError
from uplion.devstack.procs import Proc, free_port, spawn, wait_until

from .conftest import WEB

FILES = frozenset({"index.html", "favicon.svg", "assets/index-BFBGfv9-.css", "assets/index-CezyN1GJ.js"})


# --- which file -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind", "rel"),
    [
        ("/", Kind.INDEX, "index.html"),
        ("/index.html", Kind.INDEX, "index.html"),
        ("/users", Kind.INDEX, "index.html"),
        ("/users/u_123?tab=keys", Kind.INDEX, "index.html"),
        ("/models/new", Kind.INDEX, "index.html"),
        ("/assets/index-CezyN1GJ.js", Kind.FILE, "assets/index-CezyN1GJ.js"),
        ("/favicon.svg", Kind.FILE, "favicon.svg"),
        ("/assets/index-OLDHASH1.js", Kind.NOT_FOUND, ""),  # a stale chunk: 404, never index.html as JS
        ("/assets/anything", Kind.NOT_FOUND, ""),
        ("/robots.txt", Kind.NOT_FOUND, ""),
        ("/../etc/passwd", Kind.NOT_FOUND, ""),
        ("/assets/%2e%2e/%2e%2e/secret", Kind.NOT_FOUND, ""),
        ("/a\\b", Kind.NOT_FOUND, ""),
        ("/.env", Kind.NOT_FOUND, ""),
        ("/assets/index-CezyN1GJ.js.gz", Kind.NOT_FOUND, ""),
        ("/admin/v1/users", Kind.API, ""),
        ("/v1/chat/completions", Kind.API, ""),
        ("/v1", Kind.API, ""),
    ],
)
def test_choose(path: str, kind: Kind, rel: str) -> None:
    got = choose(path, FILES)
    assert got.kind is kind
    assert got.rel_path == rel


def test_normalize_rejects_escapes() -> None:
    assert normalize("/a/./b//c") == "a/b/c"
    assert normalize("/") == ""
    assert normalize("/a/%00") is None
    assert normalize("relative") is None
    assert normalize("/x/../y") is None


def test_content_types() -> None:
    assert content_type("assets/x.js") == "application/javascript; charset=utf-8"
    assert content_type("index.html") == "text/html; charset=utf-8"
    assert content_type("assets/x.css") == "text/css; charset=utf-8"
    assert content_type("favicon.svg") == "image/svg+xml; charset=utf-8"
    assert content_type("assets/font.woff2") == "font/woff2"


# --- which headers ----------------------------------------------------------------------------


def test_cache_control_by_kind_of_file() -> None:
    assert cache_control("index.html", is_index=True) == NO_CACHE
    assert cache_control("assets/index-CezyN1GJ.js", is_index=False) == IMMUTABLE
    assert cache_control("assets/Chat-9GbqGZVy.js", is_index=False) == IMMUTABLE
    assert cache_control("favicon.svg", is_index=False) == SHORT
    assert not is_hashed_asset("assets/logo.svg")
    assert not is_hashed_asset("favicon-CezyN1GJ.svg")  # outside assets/: not a build-hashed name


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("gzip;q=0", False),
        ("identity", False),
        ("*", True),
        ("*;q=0", False),
        ("*, gzip;q=0", False),
        ("", False),
        (None, False),
        ("GZIP", True),
        ("gzip;q=bogus", False),
    ],
)
def test_accepts_gzip(header: str | None, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


def test_csp_is_strict() -> None:
    directives = dict(d.split(" ", 1) for d in CSP.split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert "unsafe-inline" not in CSP
    assert "unsafe-eval" not in CSP
    assert "http" not in CSP  # no other origin anywhere


def test_config(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>")
    cfg = ConsoleConfig.from_env({"UPLION_CONSOLE_ASSETS": str(tmp_path)})
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8090)
    assert cfg.assets == tmp_path.resolve()
    assert cfg.grpc_listen == "127.0.0.1:8091"
    assert split_listen("[::1]:9000", "X") == ("::1", 9000)
    with pytest.raises(ConfigError, match=r"no index\.html"):
        ConsoleConfig.from_env({"UPLION_CONSOLE_ASSETS": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match=r"UPLION_CONSOLE_LISTEN must be host:port"):
        ConsoleConfig.from_env({"UPLION_CONSOLE_ASSETS": str(tmp_path), "UPLION_CONSOLE_LISTEN": "8090"})


# --- the real server --------------------------------------------------------------------------

INDEX = '<!doctype html><html><head><script type="module" src="/assets/index-CezyN1GJ.js"></script></head></html>'
SCRIPT = "export const x = 1;\n" + "console.log('the console app');\n" * 400


@dataclass
class Console:
    proc: Proc
    base: str
    grpc_port: int
    metrics_port: int
    assets: Path


def make_assets(root: Path) -> Path:
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root / "assets" / "index-CezyN1GJ.js").write_text(SCRIPT)
    (root / "assets" / "index-BFBGfv9-.css").write_text("body{margin:0}")
    (root / ".secret").write_text("never served")
    return root


def start_console(tmp: Path) -> Console:
    assets = make_assets(tmp / "dist")
    port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(WEB), os.environ.get("PYTHONPATH", "")]),
        "UPLION_CONSOLE_ASSETS": str(assets),
        "UPLION_CONSOLE_LISTEN": f"127.0.0.1:{port}",
        "UPLION_CONSOLE_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
        "UPLION_METRICS_PORT": str(metrics_port),
        "UPLION_METRICS_HOST": "127.0.0.1",
        "UPLION_DRAIN_TIMEOUT_S": "2",
    }
    proc = spawn("console", [sys.executable, "-m", "uplion.console"], tmp / "console.log", env=env)
    console = Console(proc, f"http://127.0.0.1:{port}", grpc_port, metrics_port, assets)
    wait_until(proc, lambda: "listening on port" in proc.log_tail(), timeout=30)
    return console


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    c = start_console(tmp_path_factory.mktemp("console"))
    yield c
    c.proc.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Reply:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def assert_security_headers(r: Reply) -> None:
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"


def test_index_and_client_routes(console: Console) -> None:
    for path in ("/", "/users", "/models/echo", "/chat"):
        r = get(console.base + path)
        assert r.status == 200, path
        assert r.body.decode() == INDEX
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["content-type"].startswith("text/html")
        assert_security_headers(r)


def test_hashed_asset_is_immutable_and_gzipped(console: Console) -> None:
    plain = get(console.base + "/assets/index-CezyN1GJ.js")
    assert plain.status == 200
    assert plain.body.decode() == SCRIPT
    assert "content-encoding" not in plain.headers
    assert plain.headers["cache-control"] == IMMUTABLE
    assert plain.headers["content-type"] == "application/javascript; charset=utf-8"
    assert_security_headers(plain)
    zipped = get(console.base + "/assets/index-CezyN1GJ.js", {"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert len(zipped.body) < len(SCRIPT) / 10
    assert gzip.decompress(zipped.body).decode() == SCRIPT
    refused = get(console.base + "/assets/index-CezyN1GJ.js", {"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


def test_etag_revalidation(console: Console) -> None:
    first = get(console.base + "/")
    again = get(console.base + "/", {"If-None-Match": first.headers["etag"]})
    assert again.status == 304
    assert again.body == b""
    assert_security_headers(again)


def test_missing_files_and_api_paths_are_404_json(console: Console) -> None:
    for path in ("/assets/index-OLDHASH1.js", "/robots.txt", "/.secret", "/admin/v1/users", "/v1/models"):
        r = get(console.base + path)
        assert r.status == 404, path
        assert json.loads(r.body)["error"]["code"] == "not_found"
        assert_security_headers(r)
    r = get(console.base + "/users", method="POST")
    assert r.status == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert_security_headers(r)


def test_head(console: Console) -> None:
    r = get(console.base + "/assets/index-CezyN1GJ.js", method="HEAD")
    assert r.status == 200
    assert r.body == b""


def test_health_and_metrics(console: Console) -> None:
    assert get(console.base + "/healthz").status == 200
    assert get(console.base + "/readyz").status == 200
    with grpc.insecure_channel(f"127.0.0.1:{console.grpc_port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "uplion.console"):
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
    metrics = get(f"http://127.0.0.1:{console.metrics_port}/metrics").body.decode()
    assert 'uplion_console_requests_total{kind="index",status="200"}' in metrics
    assert "uplion_console_request_seconds_bucket" in metrics


def test_logs_are_json(console: Console) -> None:
    lines = [ln for ln in console.proc.log_tail(50).splitlines() if ln.startswith("{")]
    assert lines, console.proc.log_tail()
    first = json.loads(lines[0])
    assert first["service"] == "console"
    assert first["msg"] == "assets loaded"
    assert first["files"] == 4  # the dotfile is not loaded


def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    c = start_console(tmp_path)
    try:
        assert get(c.base + "/").status == 200
        os.kill(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while c.proc.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.proc.popen.returncode == 0, c.proc.log_tail()
        assert "draining" in c.proc.log_tail()
    finally:
        c.proc.stop()


def test_refuses_to_start_without_a_build(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(WEB), os.environ.get("PYTHONPATH", "")]),
        "UPLION_CONSOLE_ASSETS": str(tmp_path / "nothing"),
    }
    out = subprocess.run([sys.executable, "-m", "uplion.console"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "has no index.html" in out.stderr
    assert "npm run build" in out.stderr
