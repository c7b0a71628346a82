#!/usr/bin/env python3
"""One entry point for working on posthog-integrations.

    python3 dev.py demo    run the demo against the embedded local dev server
    python3 dev.py test    lint, type-check and run the whole test suite

Each command creates ``.venv`` next to this file on first use and installs the
package with its ``dev`` extra into it; later runs reuse it and reinstall only
when ``pyproject.toml`` changed. Extra arguments after ``test`` go to pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".dev-stamp"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def _fingerprint() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_env() -> None:
    if not PY.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=VENV.exists()).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    print("installing posthog-integrations[dev] into .venv ...", flush=True)
    pip = [str(PY), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(_fingerprint())


def run(*args: str) -> int:
    print("$", " ".join(args), flush=True)
    return subprocess.call(list(args), cwd=ROOT)


def cmd_test(extra: list[str]) -> int:
    steps = [
        (str(PY), "-m", "ruff", "check", "core", "posthog_integrations", "tests",
         "benchmarks", "example_projects", "dev.py"),
        (str(PY), "-m", "mypy"),
        (str(PY), "-m", "pytest", *extra),
    ]
    for step in steps:
        code = run(*step)
        if code != 0:
            return code
    return 0


def cmd_demo(extra: list[str]) -> int:
    return run(str(PY), str(ROOT / "example_projects" / "demo.py"), *extra)


def main(argv: list[str]) -> int:
    commands = {"test": cmd_test, "demo": cmd_demo}
    if not argv or argv[0] not in commands:
        print(__doc__)
        return 2
    ensure_env()
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
