"""What a run prints: one progress bar per step and ``[curate]`` log lines, on stderr."""

from __future__ import annotations

import sys


def progress(total: int, label: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="units", desc=label, disable=not enabled, dynamic_ncols=True, file=sys.stderr)


def log(message: str) -> None:
    print(f"[curate] {message}", file=sys.stderr, flush=True)
