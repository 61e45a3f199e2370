"""The one exception type users catch.

Every problem caused by user input (a wrong layer, a file that is not an SAE, a vector
for another model) raises :class:`YapoError` with a message that says what was wrong and
what to do. The CLI turns it into a one-line error and exit code 2, so tracebacks are
reserved for bugs.
"""

from __future__ import annotations


class YapoError(Exception):
    """Bad input or an unsupported setting, with an actionable message."""


class MismatchError(YapoError):
    """A vector, SAE or model does not fit the thing it is combined with."""
