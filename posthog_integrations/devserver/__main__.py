"""Command line entry point: ``python -m posthog_integrations.devserver`` / ``posthog-devserver``.

Runs the dev server in the foreground on loopback until Ctrl-C (or SIGTERM), keeping
events in a persistent SQLite file so they survive restarts, and answering feature flags
from a definitions file (``--flags``) that is re-read whenever it changes.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

from .server import DEFAULT_MAX_BODY_BYTES, DevServer

__all__ = ["default_db_path", "is_loopback", "main"]

DB_ENV_VAR = "POSTHOG_DEVSERVER_DB"
FLAGS_ENV_VAR = "POSTHOG_DEVSERVER_FLAGS"


def default_db_path() -> Path:
    """``$POSTHOG_DEVSERVER_DB`` if set, else ``~/.cache/posthog-devserver/events.sqlite3``."""
    configured = os.environ.get(DB_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "posthog-devserver" / "events.sqlite3"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP literal or a name) only ever refers to this machine."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    if not name:
        return False  # "" means every interface
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    addresses = {str(info[4][0]).split("%", 1)[0] for info in infos}
    try:
        return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)
    except ValueError:
        return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posthog-devserver",
        description="Local PostHog-compatible ingestion server that stores events in SQLite.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8010, help="port, 0 for any free one (default: %(default)s)"
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        help=f"SQLite file (default: ${DB_ENV_VAR} or ~/.cache/posthog-devserver/events.sqlite3)",
    )
    parser.add_argument(
        "--flags",
        metavar="PATH",
        default=os.environ.get(FLAGS_ENV_VAR) or None,
        help=f"flag definitions JSON (PostHog's /flags/definitions format, or a list of flags),"
        f" re-read when it changes (default: ${FLAGS_ENV_VAR}; none: no flags)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow binding a non-loopback interface (the server has no authentication)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest accepted request body, after decompression (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, serve until interrupted and return the process exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error; argparse already printed why
        return exc.code if isinstance(exc.code, int) else 2

    if not args.allow_remote and not is_loopback(args.host):
        print(
            f"posthog-devserver: refusing to bind {args.host!r}: it is not a loopback address, "
            "and the dev server has no authentication and stores whatever it is sent. "
            "Pass --allow-remote to bind it anyway.",
            file=sys.stderr,
        )
        return 2

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    db_path = Path(args.db).expanduser() if args.db else default_db_path()
    flags_path = Path(args.flags).expanduser() if args.flags else None
    server = DevServer(
        host=args.host, port=args.port, db_path=db_path, max_body_bytes=args.max_body_bytes,
        flags_path=flags_path,
    )
    try:
        server.start()
    except (OSError, ValueError) as exc:
        print(f"posthog-devserver: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():

        def _on_sigterm(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    flags_note = f", flags: {flags_path}" if flags_path is not None else ""
    print(f"posthog-devserver listening on {server.url} (db: {server.db_path}{flags_note})",
          flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
