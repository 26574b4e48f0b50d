"""Helpers the test modules share (pgqueuer's ``test/helpers.py`` in spirit): written once."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from wis2l_core.ids import uuid7
from wis2l_core.runtime import Wis2l

__all__ = ["eventually", "field_is", "has", "make_project", "npm_packages"]

Check = Callable[[], bool | Awaitable[bool]]

ROOT = Path(__file__).resolve().parent.parent
"""The repository's root."""


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
    """Check that ``folder``'s npm packages are installed; return node's path.

    Tests never install anything (no network from tests): .ci/run runs ``npm ci``. When
    node or the package is missing, the test fails and says which command installs it.
    """
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is needed (for the npm package {package}): apt-get install nodejs npm")
    if not (folder / "node_modules" / package).is_dir():
        prefix = "" if folder.resolve() == ROOT else f" --prefix {folder.relative_to(ROOT)}"
        pytest.fail(
            f"the npm package {package} is not installed in {folder}: run "
            f"`npm ci --ignore-scripts{prefix}` at the repository's root (.ci/run does)"
        )
    return node


def has(**expected: object) -> Callable[[BaseException], bool]:
    """For ``pytest.raises(ServiceUnavailable, check=has(service="redis"))``: the error
    carries these attribute values, so an error about another service, variable or field
    fails the test."""

    def check(exc: BaseException) -> bool:
        return all(getattr(exc, name, None) == value for name, value in expected.items())

    check.__qualname__ = "has(" + ", ".join(f"{k}={v!r}" for k, v in expected.items()) + ")"
    return check


def field_is(name: str) -> Callable[[BaseException], bool]:
    """For ``pytest.raises(ValidationError, check=field_is("email"))``: the error names
    that field (``.field``)."""
    return has(field=name)
