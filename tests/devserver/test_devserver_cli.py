"""The ``python -m posthog_integrations.devserver`` / ``posthog-devserver`` command line."""

from __future__ import annotations

import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from posthog_integrations.devserver.__main__ import default_db_path, is_loopback, main


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", ""])
def test_refuses_non_loopback_host(host: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", host, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to bind" in err
    assert "--allow-remote" in err


def test_is_loopback() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", ""):
        assert not is_loopback(host), host


def test_default_db_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POSTHOG_DEVSERVER_DB", str(tmp_path / "custom.sqlite3"))
    assert default_db_path() == tmp_path / "custom.sqlite3"

    monkeypatch.delenv("POSTHOG_DEVSERVER_DB")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_db_path() == tmp_path / ".cache" / "posthog-devserver" / "events.sqlite3"


def test_help_and_usage_errors_return_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--allow-remote" in capsys.readouterr().out
    assert main(["--port", "not-a-number"]) == 2


def test_port_in_use_is_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--port", str(port), "--db", str(tmp_path / "x.sqlite3")]) == 1
    assert "cannot serve" in capsys.readouterr().err


@pytest.mark.parametrize("pick", ["free port", "port 0"])
def test_module_serves_until_terminated(tmp_path: Path, pick: str) -> None:
    port = _free_port() if pick == "free port" else 0
    db = tmp_path / "cli" / "events.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-m", "posthog_integrations.devserver", "--port", str(port),
         "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", banner)
        assert match is not None, banner
        if port:
            assert int(match.group(1)) == port
        assert str(db) in banner
        url = match.group(0)
        deadline = time.monotonic() + 10
        while True:
            try:
                health = requests.get(url + "/health", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert health.json() == {"status": "ok"}

        event = {"api_key": "k", "event": "from_cli_test", "distinct_id": "u"}
        assert requests.post(url + "/capture/", json=event, timeout=5).status_code == 200
        results = requests.get(url + "/api/events", timeout=5).json()["results"]
        assert [e["event"] for e in results] == ["from_cli_test"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)

    assert proc.returncode == 0, err
    assert out == ""  # only the banner line, already read
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT event FROM events").fetchall() == [("from_cli_test",)]
    finally:
        conn.close()
