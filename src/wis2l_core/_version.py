"""The installed wis2l-core version, looked up once (health reports, ``wis2l --version``)."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version

__all__ = ["package_version"]


@functools.cache
def package_version() -> str:
    """The installed wis2l-core version.

    Returns:
        The distribution's version, e.g. ``"0.1.0"``; ``"unknown"`` when the package runs
        from a checkout that was never installed.
    """
    try:
        return version("wis2l-core")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"
