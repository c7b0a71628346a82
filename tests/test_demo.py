"""The README's demo command runs and finds every event it sent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "example_projects" / "demo.py"


def test_demo_runs_and_every_event_is_stored() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "each uuid returned by the SDK was found in the dev server." in out
    for name in ("order completed", "$set_once", "$create_alias", "$groupidentify",
                 "$exception", "$feature_flag_called", "personless"):
        assert name in out, name
    assert "/flags requests: 0 (every flag was evaluated locally)" in out
