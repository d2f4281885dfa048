"""Helpers for the thin Hydra entry points in ``scripts/``: one-line errors for user mistakes."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
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
