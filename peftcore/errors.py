"""Warning and error categories of peftcore."""

from __future__ import annotations


class PeftWarning(UserWarning):
    """A warning about adapter behaviour the user may not expect (e.g. a bias that cannot be merged)."""


class AdapterSizeMismatchError(ValueError, RuntimeError):
    """An adapter tensor's shape does not fit the model it is loaded into.

    Both a ValueError (a bad value for this model) and a RuntimeError (what torch's `load_state_dict`
    raises for a size mismatch), so code written against either keeps catching it.
    """
