"""One run of the fleet benchmark: its settings, work directory and result.

The phases (fleet_phases_baseline.py, fleet_phases_hub.py) are plain
functions of this one object, so that every phase measures with the same
windows and scales and writes into the same ``fleet.json`` document.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from fleet_procs import HERE, machine

RESULTS = HERE / "results"
#: The scales whose ratio to echo has a target (issue 6). The others (10
#: agents: how the costs grow) get 3 windows, and echo is measured again,
#: after the hub, only at these: the whole run stays under five minutes.
TARGET_SCALES = (100, 1000)


class Bench:
    """Shared by every phase: `--quick` shortens all of them alike (3 windows, shorter warm-up)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.windows = 3 if args.quick else 5
        self.window_s = 2.0
        self.warmup_s = 1.5 if args.quick else 2.0
        self.scales = [100, 1000] if args.quick else [10, 100, 1000]
        self.tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
        self.acked_files: dict[str, list[Path]] = {"full": [], "normal": []}
        self.asked_files: list[Path] = []
        self.out: dict[str, Any] = {
            "machine": machine(),
            "quick": self.quick,
            "windows": self.windows,
            "window_s": self.window_s,
        }
        self._n = 0

    def win_args(self, windows: int | None = None) -> list[str]:
        return [
            "--warmup-s",
            str(self.warmup_s),
            "--windows",
            str(windows or self.windows),
            "--window-s",
            str(self.window_s),
        ]

    def scale_args(self, n: int, windows: int | None = None) -> list[str]:
        """``win_args`` for a closed loop at ``n`` agents or clients: ``windows``
        if given, else the run's (3 at a scale without a target)."""
        if windows is None and n not in TARGET_SCALES:
            windows = min(3, self.windows)
        return self.win_args(windows)

    def outfile(self, tag: str) -> Path:
        self._n += 1
        return self.tmp / f"{self._n:02d}-{tag}.json"
