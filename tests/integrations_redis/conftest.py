"""A real ``redis-server`` on a free loopback port for the session; skipped when there is none."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from redis import Redis

MISSING_SERVER = "redis-server not installed: apt-get install redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start(binary: str, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start redis-server and wait for PING; retries on a port taken in the meantime."""
    for _ in range(3):
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers_ping(port):
                return proc, port
            time.sleep(0.02)
        proc.kill()
        proc.wait(timeout=5)
    raise RuntimeError("redis-server did not start (answered no PING)")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:<port>/0`` of a redis-server that lives for the whole session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(MISSING_SERVER)
    pytest.importorskip("redis", reason="the redis package is not installed: pip install redis")
    proc, port = _start(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Redis]:
    """A client on an emptied database."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own for each test."""
    return f"test:{uuid.uuid4().hex[:12]}"
