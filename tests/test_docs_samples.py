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
import doctest
import inspect
import io
import os
import re
import secrets
import signal
import subprocess
import sys
import tokenize
import unittest
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sybil import Example, Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser

from wis2l_core import Settings, Wis2l
from wis2l_core._urls import PART_VARIABLES
from wis2l_core.testing.plugin import drop_stream
from wis2l_core.testing.servers import Servers

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")],
    key=lambda p: str(p.relative_to(ROOT)),
)
CONTINUES = "continues the block above"
SERVER_VARS = ("DATABASE_URL", "REDIS_URL", "NATS_URL", "WIS2L_NAMESPACE", "WIS2L_STREAM")
OTHER_VARS = (*PART_VARIABLES, "WIS2L_ENV", "WIS2L_MIGRATIONS", "WIS2L_QUERIES")


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


# `print(x)  # -> shown`; a why may follow the shown text after two spaces and `#`.
SHOWN = re.compile(r"#\s*->(?: (?P<text>.*?))?(?:\s{2,}#.*)?$")
OUTPUT_BLOCK = re.compile(r"\s*```text\n(?P<text>.*?)```", re.DOTALL)
CHECKER = doctest.OutputChecker()
# `...` stands for anything; runs of spaces and line ends compare equal (aligned columns).
LOOSE = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
NOTHING = "(nothing)\n"


def shown_output(source: str) -> tuple[str, dict[int, str]]:
    """What a block shows it prints, from its ``# -> text`` comments.

    A comment ends a ``print(...)`` line, or stands alone below a loop that prints (one
    comment per line printed). ``...`` in the text stands for anything (doctest's
    ELLIPSIS), for what differs from run to run (ids, times). Returns the text the
    block's own code prints, in order, and ``{line: text}`` for the prints inside a
    function (a subscriber prints whenever its event arrives, maybe during a later
    block): each line such a print writes must match its text. Line numbers are those
    of ``source``.
    """
    tree = compile(source, "<doc>", "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    in_function = {
        line
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)
    }
    in_order, whenever = [], {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and (found := SHOWN.match(token.string)):
            text = (found["text"] or "").rstrip()
            if token.start[0] in in_function:
                whenever[token.start[0]] = text
            else:
                in_order.append(text + "\n")
    return "".join(in_order), whenever


class Recorder:
    """The ``print`` of a page's namespace: it records what each doc line prints."""

    def __init__(self) -> None:
        self.printed: list[tuple[str, int, str]] = []  # (file, line, text)

    def __call__(
        self,
        *args: Any,
        sep: str | None = " ",
        end: str | None = "\n",
        file: Any = None,
        flush: bool = False,
    ) -> None:
        if file is not None and file is not sys.stdout:
            print(*args, sep=sep, end=end, file=file, flush=flush)
            return
        text = io.StringIO()
        print(*args, sep=sep, end=end, file=text)
        caller = sys._getframe(1)
        self.printed.append((caller.f_code.co_filename, caller.f_lineno, text.getvalue()))


# Pages of other work in flight whose prints are not marked with `# ->` yet: their
# output is not compared until they are (remove a page from here when it is).
OUTPUT_NOT_MARKED: set[str] = set()


class AwaitingEvaluator:
    """Runs a block like ``python -m asyncio`` does: top-level ``await`` on one loop per
    page, and checks that it prints what it shows (``# -> text`` comments, or the ```text
    block right after a script)."""

    def __init__(self, *, compare: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.compare = compare
        self.recorder = Recorder()
        self.whenever: dict[tuple[str, int], str] = {}  # (file, line) -> text
        self.seen: set[tuple[str, int]] = set()

    def __call__(self, example: Example) -> None:
        __tracebackhide__ = True
        source = "\n" * (example.line + example.parsed.line_offset) + example.parsed
        code = compile(
            source, example.path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
        example.namespace["print"] = self.recorder
        with time_limit(BLOCK_TIMEOUT, f"{example.path}, line {example.line}"):
            if "asyncio.run(" in example.parsed:  # a script: asyncio.run() makes its own loop
                exec(code, example.namespace)
            elif code.co_flags & inspect.CO_COROUTINE:  # top-level await
                self.loop.run_until_complete(eval(code, example.namespace))
            else:  # as in the REPL, inside the running loop (subscribe() starts a task)
                self.loop.run_until_complete(run_in_loop(code, example.namespace))
        example.namespace.pop("__builtins__", None)
        example.namespace.pop("print", None)
        if self.compare:
            self.check_output(example, source)

    def check_output(self, example: Example, source: str) -> None:
        """What the block printed is what it shows."""
        after = OUTPUT_BLOCK.match(example.document.text, example.end)
        want, whenever = shown_output(source)
        if after:  # a script's whole output
            want, whenever = after["text"], {}
        self.whenever.update({(example.path, line): text for line, text in whenever.items()})
        printed = ""
        for where, text in ((r[:2], r[2]) for r in self.recorder.printed):
            if where not in self.whenever:
                printed += text
                continue
            self.seen.add(where)
            for line in text.splitlines():
                if not CHECKER.check_output(
                    self.whenever[where] + "\n", line + "\n", doctest.ELLIPSIS
                ):
                    raise AssertionError(
                        f"line {where[1]} shows it prints {self.whenever[where]!r}, "
                        f"but it printed {line!r}"
                    )
        self.recorder.printed.clear()
        if not CHECKER.check_output(want, printed, LOOSE):
            raise AssertionError(
                f"the block shows it prints\n{want or NOTHING}but it printed\n"
                f"{printed or NOTHING}(mark what a line prints with `# -> text`)"
            )

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


def session_blocks(page: Path) -> list[str]:
    """The blocks of ``page`` a reader pastes into ``python -m asyncio``, in order.

    Those are the blocks the test runs (not skipped) that are neither scripts (they end in
    ``asyncio.run(main())``: saved and run) nor files (their first line names one, as
    ``# tests/test_signup.py``).
    """
    blocks: list[str] = []

    def collect(example: Example) -> None:
        blocks.append(str(example.parsed))

    for example in page_sybil(collect).parse(page):
        with contextlib.suppress(unittest.SkipTest):
            example.evaluate()
    return [
        block
        for block in blocks
        if "asyncio.run(" not in block and not re.match(r"# [\w/.-]+\.py$", block.splitlines()[0])
    ]


def pages_with_sessions() -> list[Path]:
    return [page for page in PAGES if session_blocks(page)]


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
    evaluator = AwaitingEvaluator(
        compare=page.relative_to(ROOT).as_posix() not in OUTPUT_NOT_MARKED
    )
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
    text = page.read_text(encoding="utf-8")
    # The page's own pyproject.toml and install line, not a configuration of ours.
    (pyproject,) = re.findall(r"```toml\n(# pyproject.toml.*?)```", text, re.DOTALL)
    (tmp_path / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    (install,) = re.findall(r'pip install "wis2l-core\[([\w,]+)\]"', text)
    if any(re.search(r"wis2l_core\.(auth|dev\.issuer)", source) for source in modules.values()):
        assert "auth" in install.split(","), f"the install line lacks the auth extra: {install}"
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
    # The page's configuration is clean: no warning in the summary or at start-up.
    assert "warning" not in done.stdout.lower() + done.stderr.lower(), done.stderr[-2000:]


# Leaving the REPL does not stop what a page started; the test does (as run_page does).
# (wis2l_core.sync.Wis2l's stop() is a plain method: nothing to await, and a `with` block
# already closed it.)
REPL_EPILOGUE = (
    "for _value in list(globals().values()):\n"
    "    if type(_value).__name__ == 'Wis2l' and type(_value).__module__ == 'wis2l_core.runtime':\n"
    "        await _value.stop()\n"
    "\n"
)
REPL_BANNER = ("asyncio REPL ", 'Use "await" directly', 'Type "help"', ">>> import asyncio")
REPL_OUTPUT_LIMIT = 20_000  # characters a page may print in the REPL (prompts included)


# Another change in flight fixes this page; strict, so the test says when it is done.
REPL_NOT_FIXED_YET: set[str] = set()


def repl_pages() -> list[Any]:
    return [
        pytest.param(
            page,
            id=name,
            marks=[pytest.mark.xfail(reason="not pasteable yet", strict=True)]
            if name in REPL_NOT_FIXED_YET
            else [],
        )
        for page in pages_with_sessions()
        if (name := page.relative_to(ROOT).as_posix())
    ]


@pytest.mark.slow
@pytest.mark.parametrize("page", repl_pages())
def test_page_sessions_paste_into_the_asyncio_repl(page: Path, page_env: Settings) -> None:
    """A page's session blocks, pasted in order into ``python -m asyncio`` as
    getting-started.md says, run without a traceback and without pages of output.

    Each block is sent as it is written, then an empty line (the Enter a reader presses
    after a paste). The REPL reads line by line, so what ``exec`` forgives fails here: a
    top-level line right after an indented block, or an empty line inside one. Every
    value an expression statement returns is echoed, so a block ending in a call that
    returns a big object floods the terminal.
    """
    paste = "".join(block + "\n" for block in session_blocks(page)) + REPL_EPILOGUE
    done = subprocess.run(
        [sys.executable, "-m", "asyncio"],
        input=paste,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    errors = [
        line
        for line in done.stderr.splitlines()
        if line.strip() and not line.startswith(REPL_BANNER) and line != "exiting asyncio REPL..."
    ]
    assert errors == [], done.stderr[-4000:]
    assert len(done.stdout) < REPL_OUTPUT_LIMIT, done.stdout[:2000]
