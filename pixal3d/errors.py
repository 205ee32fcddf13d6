"""Error types shared by the whole package.

`InputError` marks a mistake of the caller (a bad file, an impossible option): the CLI maps it to exit code 2
and the REST server to HTTP 400. Everything else is a bug or an environment problem and propagates as is.
"""

from __future__ import annotations


class InputError(ValueError):
    """A user mistake: the message names the problem, shows the value and says how to fix it."""
