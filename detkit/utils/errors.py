"""The errors that mean "what you gave is wrong", and the one way the command-line tools report them.

Every such error derives from :class:`DetkitError` as well as from the built-in class callers already catch
(``ValueError``, ``KeyError``, ``RuntimeError``, ...). Its message is complete on its own: it names the file, the
config field or the argument, and what to do. A tool's ``__main__`` runs through :func:`run_tool`, which prints such
an error as one line (``error: <message>``) and exits with status 2 instead of a traceback; any other exception is
a bug and keeps its traceback. ``DETKIT_TRACEBACK=1`` shows the traceback of user errors too.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ['DetkitError', 'ConfigError', 'ConfigKeyError', 'ConfigTypeError', 'run_tool']


class DetkitError(Exception):
    """Base of the errors in what the user gave (config, files, arguments); the message says it all."""

    def __str__(self) -> str:  # a KeyError subclass would print the repr of its message
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class ConfigError(DetkitError, ValueError):
    """A config value (or a pairing of config, data and checkpoint) that cannot be used; names the field."""


class ConfigKeyError(DetkitError, KeyError):
    """A config key that nothing reads (a typo, or a setting detkit does not support), or a type no registry
    holds."""


class ConfigTypeError(DetkitError, TypeError):
    """A component built with an argument it does not take (or without one it needs); names both."""


def run_tool(main: Callable[[], Any]) -> Any:
    """Run a tool's ``main``; a :class:`DetkitError` or a missing input file becomes one line on stderr, exit 2."""
    try:
        return main()
    except (DetkitError, FileNotFoundError) as err:
        if os.environ.get('DETKIT_TRACEBACK'):
            raise
        print(f'error: {err}', file=sys.stderr)
        raise SystemExit(2) from None
