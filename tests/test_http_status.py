"""`jax-pccl master --http-port` (#21): /status.json, /metrics (parsed with
prometheus-client's own parser) and the live page, against a master with 3
peers of `jax-pccl launch` that all-reduce. The page is loaded in headless
Chromium (its DOM must list the 3 peers) and a screenshot taken. In CI ($CI
set, as root) a missing Chromium is installed from Debian's packages and a
failed install fails the test; elsewhere a machine without one skips it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import harness
import provision
from test_launch import PEER, jax_pccl_cli


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A CLI master with its HTTP side and 3 launched peers that all-reduce."""
    d = tmp_path_factory.mktemp("http")
    master = subprocess.Popen([*jax_pccl_cli(), "master", "--host", "127.0.0.1", "--port", "0",
                               "--http-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=tempfile.gettempdir())
    launch = None
    try:
        address = re.search(r"listening on (\S+) ", master.stdout.readline()).group(1)
        http = re.search(r"status on http://(\S+)/ ", master.stdout.readline()).group(1)
        launch = subprocess.Popen([*jax_pccl_cli(), "launch", "-n", "3", "--master", address, PEER,
                                   "hold", str(d)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(),
                                  env={**os.environ, **harness.peer_env()})
        deadline = time.monotonic() + 120
        while True:  # every peer in, each with counters from its heartbeats
            status = json.loads(get(f"http://{http}/status.json")[2])
            if len(status["peers"]) == 3 and all(p["collectives_done"] > 0 for p in status["peers"]):
                break
            assert time.monotonic() < deadline and launch.poll() is None, status
            time.sleep(0.5)
        yield http, status
    finally:
        Path(d, "stop").touch()
        if launch is not None:
            try:
                launch.wait(timeout=60)
            finally:
                if launch.poll() is None:
                    launch.kill()
        master.terminate()
        master.wait(timeout=30)


def test_status_json_is_the_masters_status(run):
    http, status = run
    code, kind, body = get(f"http://{http}/status.json")
    assert code == 200 and kind == "application/json"
    again = json.loads(body)
    assert {p["id"] for p in again["peers"]} == {p["id"] for p in status["peers"]}
    assert again["groups"][0]["world_size"] == 3 and again["world_size"] == 3


def test_metrics_parse_with_the_reference_parser_and_match_the_status(run):
    from prometheus_client.parser import text_string_to_metric_families

    http, _ = run
    code, kind, body = get(f"http://{http}/metrics")
    assert code == 200 and kind.startswith("text/plain; version=0.0.4")
    status = json.loads(get(f"http://{http}/status.json")[2])
    families = {f.name: f for f in text_string_to_metric_families(body)}
    value = lambda name, **labels: next(  # noqa: E731
        s.value for s in families[name].samples if all(s.labels.get(k) == str(v) for k, v in labels.items()))
    assert value("jax_pccl_world_size") == 3
    group = status["groups"][0]
    assert value("jax_pccl_group_epoch", group=0) == group["epoch"]
    assert value("jax_pccl_group_world_size", group=0) == 3
    ids = {str(p["id"]) for p in status["peers"]}
    done = families["jax_pccl_peer_collectives"]
    assert done.type == "counter"
    assert {s.labels["peer"] for s in done.samples if s.name.endswith("_total")} == ids
    assert all(s.value > 0 for s in done.samples if s.name.endswith("_total"))
    assert all(s.value > 0 for s in families["jax_pccl_peer_bytes_sent"].samples
               if s.name.endswith("_total"))
    assert all(0 <= s.value < 5 for s in families["jax_pccl_peer_heartbeat_age_seconds"].samples)
    assert value("jax_pccl_auth_refusals") == 0  # the family; its sample is ..._total


def test_the_page_and_a_missing_one(run):
    http, _ = run
    code, kind, body = get(f"http://{http}/")
    assert code == 200 and kind.startswith("text/html")
    assert '<table id="peers">' in body and 'fetch("status.json"' in body
    code, _, body = get(f"http://{http}/nope")
    assert code == 404 and "no such page: /nope" in body


def test_the_page_lists_the_peers_in_a_headless_browser(run, tmp_path):
    browser = provision.program("chromium", "chromium", "chromium-browser")
    if browser is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; CI installs it)")
    http, status = run
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
             f"--user-data-dir={tmp_path / 'profile'}"]
    # The browser is not ours to sanitize: a sanitized run's preloaded
    # runtime (tests/sanitized_suite.py) must not reach it.
    env = provision.clean_env()
    dom = subprocess.run([*flags, "--dump-dom", f"http://{http}/"], capture_output=True, text=True,
                         timeout=120, env=env).stdout
    rows = set(re.findall(r'<tr data-peer="(\d+)">', dom))
    assert rows == {str(p["id"]) for p in status["peers"]}, dom[-3000:]
    assert re.search(r'<tr data-group="0">', dom) and "registered from 127.0.0.1" in dom
    shot = tmp_path / "dashboard.png"
    subprocess.run([*flags, "--window-size=1200,800", f"--screenshot={shot}", f"http://{http}/"],
                   capture_output=True, timeout=120, env=env)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
