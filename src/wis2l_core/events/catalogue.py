"""Deprecated location of the event catalogue: use :mod:`wis2l_core.catalogue`.

The catalogue is I/O-free and shared by the repositories (which record events) and the
bus (which publishes them), so it lives beside ``models``; this module keeps old imports
working.
"""

from wis2l_core.catalogue import *  # noqa: F403
from wis2l_core.catalogue import __all__ as __all__  # noqa: PLC0414
