"""Which code produced a result: the git commit of the working tree (used by the runner, which
stamps every cell, and by the table builders, which stamp every table)."""

from __future__ import annotations

import subprocess


def current_commit() -> str:
    """Short commit of HEAD, with "+uncommitted" when tracked code outside outputs/ differs."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!outputs"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+uncommitted" if dirty else "") or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
