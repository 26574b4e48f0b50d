"""The repositories' input checks, which live in :mod:`wis2l_core._validate`.

The checks moved to the bottom floor so the caches use them without importing ``db``;
this module keeps every name of ``_validate.__all__`` where the repositories import them.
"""

from wis2l_core import _validate
from wis2l_core._validate import *  # noqa: F403

__all__ = _validate.__all__
