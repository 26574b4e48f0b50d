"""Small network helpers shared by the issuer client, the studio, the dev stack and the
drivers' connections."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback", "whole_seconds"]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``, bracketed or not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def whole_seconds(seconds: float) -> int:
    """A connect timeout for a driver that takes whole seconds: rounded, at least 1.

    libpq reads ``connect_timeout=0`` as "wait forever", so a short timeout never rounds
    down to it.
    """
    return max(1, round(seconds))
