"""Every Python block in README.md and docs/ runs, as written, against real servers (Sybil).

The samples are written the way a user runs them: scripts end in ``asyncio.run(main())``,
and the rest are REPL-style blocks with top-level ``await`` (``python -m asyncio`` or a
notebook), where a block whose first line is ``# ... continues the block above`` uses the
names of the blocks before it on the same page. Each page is one test: its blocks run in
order in one namespace, on one event loop, with ``DATABASE_URL``, ``REDIS_URL``,
``NATS_URL``, ``WIS2L_NAMESPACE`` and ``WIS2L_STREAM`` pointing at this session's servers,
a fresh database cloned from the migrated template, and a namespace and stream of the
page's own, so a page runs the same however often it runs. ``Wis2l.embedded()`` samples
start real embedded servers.

A block preceded by ``<!-- skip: next -->`` is not run (Sybil's skip directive); each such
block says why next to the directive.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import os
import re
import secrets
import signal
import subprocess
import sys
import unittest
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sybil import Example, Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser

from wis2l_core import Settings, Wis2l
from wis2l_core.testing.plugin import drop_stream
from wis2l_core.testing.servers import Servers

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")],
    key=lambda p: str(p.relative_to(ROOT)),
)
CONTINUES = "continues the block above"
SERVER_VARS = ("DATABASE_URL", "REDIS_URL", "NATS_URL", "WIS2L_NAMESPACE", "WIS2L_STREAM")
OTHER_VARS = (
    "DATABASE_USER",
    "DATABASE_PASSWORD",
    "DATABASE_HOST",
    "DATABASE_PORT",
    "DATABASE_NAME",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "REDIS_DB",
    "NATS_HOST",
    "NATS_PORT",
    "WIS2L_ENV",
    "WIS2L_MIGRATIONS",
    "WIS2L_QUERIES",
)


BLOCK_TIMEOUT = 60.0


@contextlib.contextmanager
def time_limit(seconds: float, where: str) -> Iterator[None]:
    """Raise ``TimeoutError`` in a block that hangs (a sample waiting for a signal, say)."""

    def expire(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"the sample at {where} ran for more than {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


async def run_in_loop(code: Any, namespace: dict[str, Any]) -> None:
    exec(code, namespace)


class AwaitingEvaluator:
    """Runs a block like ``python -m asyncio`` does: top-level ``await`` on one loop per page."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __call__(self, example: Example) -> None:
        __tracebackhide__ = True
        source = "\n" * (example.line + example.parsed.line_offset) + example.parsed
        code = compile(
            source, example.path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
        with time_limit(BLOCK_TIMEOUT, f"{example.path}, line {example.line}"):
            if "asyncio.run(" in example.parsed:  # a script: asyncio.run() makes its own loop
                exec(code, example.namespace)
            elif code.co_flags & inspect.CO_COROUTINE:  # top-level await
                self.loop.run_until_complete(eval(code, example.namespace))
            else:  # as in the REPL, inside the running loop (subscribe() starts a task)
                self.loop.run_until_complete(run_in_loop(code, example.namespace))
        example.namespace.pop("__builtins__", None)

    def close(self, namespace: dict[str, Any]) -> None:
        """Stop any runtime a page left started (as leaving the REPL would), then the loop."""
        for value in list(namespace.values()):
            if isinstance(value, Wis2l):
                self.loop.run_until_complete(value.stop())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


def page_sybil(evaluator: Any) -> Sybil:
    """Sybil for one page: its ```python blocks through ``evaluator``, and skip directives."""
    return Sybil(
        parsers=[CodeBlockParser(language="python", evaluator=evaluator), SkipParser()],
        path=str(ROOT),
        patterns=["*.md"],
    )


def python_blocks(page: Path) -> list[str]:
    """The source of each ```python block of ``page`` (what the test runs)."""
    document = page_sybil(_not_run).parse(page)
    return [str(ex.parsed) for ex in document if ex.region.evaluator is _not_run]


def _not_run(example: Example) -> None:
    raise AssertionError("only collected, never evaluated")


def pages_with_python() -> list[Path]:
    return [page for page in PAGES if python_blocks(page)]


@pytest.fixture
def page_env(
    wis2l_servers: Servers, wis2l_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """The servers of this session in the variables ``Settings.from_env()`` reads."""
    tag = secrets.token_hex(5)
    values = {
        "DATABASE_URL": wis2l_database_url,
        "REDIS_URL": wis2l_servers.redis_url,
        "NATS_URL": wis2l_servers.nats_url,
        "WIS2L_NAMESPACE": f"d{tag}",
        "WIS2L_STREAM": f"D{tag.upper()}",
    }
    for name in OTHER_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    yield settings
    asyncio.run(drop_stream(settings))


def test_every_python_block_is_collected() -> None:
    """The parser sees the blocks (a broken pattern would make every page pass vacuously)."""
    blocks = {p.relative_to(ROOT).as_posix(): len(python_blocks(p)) for p in PAGES}
    assert blocks["README.md"] == 1
    assert blocks["docs/getting-started.md"] >= 2
    assert sum(blocks.values()) >= 40, blocks


def test_continued_blocks_say_so() -> None:
    """A block that uses a ``wis`` it does not open says it continues the block above."""
    unmarked = []
    for page in PAGES:
        for source in python_blocks(page):
            opens = re.search(r"\bwis = |\bas wis\b|def \w+\(wis\b", source)
            if "wis." in source and not opens and CONTINUES not in source.splitlines()[0]:
                unmarked.append((page.relative_to(ROOT).as_posix(), source.splitlines()[0]))
    assert unmarked == []


def run_page(page: Path) -> int:
    """Run ``page``'s blocks in order, as one session; return how many ran (not skipped)."""
    evaluator = AwaitingEvaluator()
    document = page_sybil(evaluator).parse(page)
    ran = 0
    try:
        for example in document:
            try:
                example.evaluate()
            except unittest.SkipTest:
                continue  # a `<!-- skip: next "why" -->` directive
            except Exception as exc:
                where = f"{page.relative_to(ROOT)}, line {example.line}"
                raise AssertionError(f"the sample at {where} failed: {exc!r}") from exc
            ran += 1
    finally:
        evaluator.close(document.namespace)
    return ran


@pytest.mark.parametrize("page", pages_with_python(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_samples_run(page: Path, page_env: Settings) -> None:
    """Each page's samples run, and run again on the same database (no ``Conflict``)."""
    ran = run_page(page)
    assert ran > 0
    assert run_page(page) == ran


def test_testing_page_samples_pass_under_pytest(tmp_path: Path, wis2l_servers: Servers) -> None:
    """docs/testing.md's test modules, saved under their names, pass in a pytest of their own."""
    page = ROOT / "docs" / "testing.md"
    modules = {}
    for source in python_blocks(page):
        first = source.splitlines()[0]
        assert first.startswith("# tests/"), f"a testing.md block names its file: {first!r}"
        modules[first.removeprefix("# tests/")] = source
    assert sorted(modules) == [
        "test_handlers.py",
        "test_schema.py",
        "test_sign_in.py",
        "test_signup.py",
    ]
    for name, source in modules.items():
        (tmp_path / name).write_text(source, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n",
        encoding="utf-8",
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WIS2L_", "PYTEST_"))},
        "WIS2L_TEST_DATABASE_URL": wis2l_servers.database_url,
        "WIS2L_TEST_REDIS_URL": wis2l_servers.redis_url,
        "WIS2L_TEST_NATS_URL": wis2l_servers.nats_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "5 passed" in done.stdout, done.stdout[-2000:]
