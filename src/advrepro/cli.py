"""Helpers for the thin Hydra entry points in ``scripts/``: one-line errors for user mistakes.

    @summarise_hydra_errors            # Hydra's own errors (composition, overrides): one line first
    @hydra.main(version_base="1.3", config_path="../conf", config_name="attack")
    @user_errors_as_one_line           # errors of the task: one line only
    def main(cfg): ...
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from hydra.errors import InstantiationException
from omegaconf.errors import OmegaConfBaseException

from advrepro.errors import UserError

log = logging.getLogger("advrepro")


def user_errors_as_one_line(task: Callable[..., Any]) -> Callable[..., Any]:
    """Print a :class:`UserError` (or an invalid config value) as one line and exit with 2."""

    @functools.wraps(task)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except InstantiationException as err:
            cause = err.__cause__ or err.__context__
            if isinstance(cause, UserError):
                print(f"error: {cause}", file=sys.stderr)
                sys.exit(2)
            raise
        except OmegaConfBaseException as err:
            print(f"error: invalid configuration: {str(err).splitlines()[0]}", file=sys.stderr)
            sys.exit(2)

    return wrapped


def hydra_error_summary(err: BaseException) -> str:
    """One line saying what Hydra's (often 10-20 line) message for ``err`` says: its first line,
    the OmegaConf cause of a bad override, and the valid choices of an unknown group option."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    summary = lines[0] if lines else type(err).__name__
    cause = err.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
        summary = f"{summary.rstrip('.')}: {str(cause).strip().splitlines()[0]}"
    for i, line in enumerate(lines):
        if line.startswith("Available options in"):
            options = []
            for option in lines[i + 1:]:
                if option.startswith("Config search path"):
                    break
                options.append(option)
            summary += f"; {line.rstrip(':').lower()}: {', '.join(options)}"
            break
    return summary


@contextlib.contextmanager
def _summarised_hydra_errors() -> Iterator[None]:
    """While active, an exception that Hydra reports itself (composition, overrides, a crash of
    the task) is first summarised as one ``error:`` line, then reported by Hydra as usual."""
    import hydra._internal.utils as hydra_utils

    report = hydra_utils.run_and_report

    def summarising(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except Exception as err:
            if not os.environ.get("HYDRA_FULL_ERROR"):
                print(f"error: {hydra_error_summary(err)}", file=sys.stderr, flush=True)
            error = err

            def again() -> Any:
                raise error

            return report(again)

    hydra_utils.run_and_report = summarising
    try:
        yield
    finally:
        hydra_utils.run_and_report = report


def summarise_hydra_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a ``hydra.main`` entry point so that Hydra's own error messages (raised before the
    task runs, e.g. an unknown config group option) start with a one-line summary; everything
    else, exit status included, is unchanged."""

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with _summarised_hydra_errors():
            return main(*args, **kwargs)

    return wrapped
