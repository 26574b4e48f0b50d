"""Helpers the test modules share (pgqueuer's ``test/helpers.py`` in spirit): written once."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from wis2l_core.ids import uuid7
from wis2l_core.runtime import Wis2l

__all__ = ["eventually", "make_project", "npm_packages"]

Check = Callable[[], bool | Awaitable[bool]]


async def eventually(check: Check, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Wait until ``check()`` (sync or async) is true; fail the test after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def make_project(wis: Wis2l, engine: str = "godot") -> uuid.UUID:
    """A fresh user and a project of theirs (unique email, subject and slug); its id."""
    tag = uuid7().hex
    user = await wis.users.create(email=f"u{tag}@example.com", name="U", subject=tag)
    project = await wis.projects.create(owner_id=user.id, name="P", slug=f"p-{tag}", engine=engine)
    return project.id


def npm_packages(folder: Path, package: str) -> str:
    """Make sure ``folder``'s npm packages are installed (``npm ci``); return node's path.

    CI runs ``npm ci`` itself; on a machine where it has not run, the first test that
    needs the packages installs them from the folder's lock file. Without node and npm
    the test is skipped, and says why.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"node and npm are needed (for the npm package {package})")
    if not (folder / "node_modules" / package).is_dir():
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix", str(folder)],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return node
