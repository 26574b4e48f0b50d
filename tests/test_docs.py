"""The documentation: the site builds with ``mkdocs build --strict``; README links resolve;
the ``wis2l`` commands in ```console blocks print what the pages show."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import npm_packages
from wis2l_core.testing.servers import Servers

ROOT = Path(__file__).resolve().parent.parent

# [text](target) or [text](target "title"); images too. Reference-style links are not used.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")  # http:, https:, mailto:, //host


def relative_links(markdown: str) -> list[str]:
    """The link targets in ``markdown`` that point into the repository (anchors removed)."""
    # Code blocks and inline code may hold text that looks like a link.
    text = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = []
    for target in LINK.findall(text):
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def test_link_parser_finds_relative_links_only() -> None:
    sample = (
        "[a](docs/index.md) [b](https://x.io/y.md) [c](#top) ![d](img/logo.png 'x')\n"
        '[e](CHANGELOG.md#unreleased) [f](mailto:a@b.c) `[g](not/a/link.md)` [h](docs/x.md "t")\n'
        "```\n[i](in/code.md)\n```\n"
    )
    assert relative_links(sample) == ["docs/index.md", "CHANGELOG.md", "docs/x.md"]


def test_readme_relative_links_exist() -> None:
    readme = ROOT / "README.md"
    targets = relative_links(readme.read_text(encoding="utf-8"))
    assert targets, "README.md has no relative links: the parser is broken or the README is"
    missing = [t for t in targets if not (readme.parent / t).exists()]
    assert missing == [], f"README.md links to missing files: {missing}"


@pytest.mark.timing
@pytest.mark.slow
def test_docs_build_strict(tmp_path: Path) -> None:
    npm_packages(ROOT, "mermaid")  # docs/hooks/mermaid.py serves its bundle with the site
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-5000:]}"
    assert (site / "index.html").is_file()
    # The API reference really rendered from the docstrings (not an empty page).
    runtime = (site / "reference" / "runtime" / "index.html").read_text(encoding="utf-8")
    assert "run_until_signal" in runtime
    # Every page in the nav was built, including the generated event catalogue.
    events = (site / "events" / "index.html").read_text(encoding="utf-8")
    assert "wis2l.build.progress" in events
    # Mermaid ships with the site (docs/hooks/mermaid.py), so diagrams render offline.
    bundle = site / "assets" / "javascripts" / "mermaid.min.js"
    assert bundle.stat().st_size > 1_000_000
    concepts = (site / "concepts" / "index.html").read_text(encoding="utf-8")
    assert 'class="mermaid"' in concepts
    assert "assets/javascripts/mermaid.min.js" in concepts
    # The reference shows what an app calls, not constructors it never calls.
    reference = (site / "reference" / "repositories" / "index.html").read_text(encoding="utf-8")
    assert "find_by_email" in reference
    assert "UserRepository(" not in reference
    assert elapsed < 60, f"the docs build took {elapsed:.1f} s"


# Shell blocks. In ```console blocks, `$ command` lines are each followed by what the
# command prints; in ```bash blocks, a command followed by `# -> text` lines prints those
# lines (the `export` lines above it set its variables). The `wis2l` commands that show
# output run against this session's servers and must print that output, up to what
# varies from run to run (ports, durations, ids).
SHELL_BLOCK = re.compile(
    r"(?:<!-- console-env: (?P<env>[^>]*?) -->\n)?```(?P<kind>console|bash)\n(?P<body>.*?)```",
    re.DOTALL,
)
VARYING = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"(127\.0\.0\.1|localhost)(:|', )\d+"), r"\1\2<port>"),
    (re.compile(r"(?<![\d.])\d+\.\d+(?![\d.])"), "<n.n>"),  # durations, latencies
    (re.compile(r"wis2l-core [^)\s]+"), "wis2l-core <version>"),
    (re.compile(r"\s+"), " "),  # column widths follow the numbers
]
# Pages of other work in flight whose console output is stale (the integrator refreshes
# them); strict, so the test says when they are right.
CONSOLE_NOT_FIXED_YET: set[str] = set()


def normalised(output: str) -> list[str]:
    lines = []
    for printed in output.strip().splitlines():
        line = printed
        for pattern, replacement in VARYING:
            line = pattern.sub(replacement, line)
        lines.append(line.strip())
    return lines


def console_steps(body: str) -> Iterator[tuple[dict[str, str], str, str, int | None]]:
    """(variables, command, shown output, shown exit code) of a ```console block."""
    steps = re.split(r"^\$ ", body, flags=re.M)[1:]
    for i, step in enumerate(steps):
        command, _, shown = step.partition("\n")
        after = steps[i + 1] if i + 1 < len(steps) else ""
        code = after.partition("\n")[2].strip() if after.startswith("echo $?") else ""
        yield {}, command, shown, int(code) if code else None


def bash_steps(body: str) -> Iterator[tuple[dict[str, str], str, str, int | None]]:
    """(variables, command, shown output, None) of a ```bash block."""
    variables: dict[str, str] = {}
    lines = body.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("export "):
            for word in shlex.split(line, comments=True)[1:]:
                name, _, value = word.partition("=")
                variables[name] = value
            continue
        if not line.strip() or line.startswith("#"):
            continue
        shown = []
        for after in lines[i + 1 :]:
            if not after.startswith("# ->"):
                break
            shown.append(after.removeprefix("# ->").strip())
        yield dict(variables), line, "\n".join(shown), None


def shell_commands() -> list[Any]:
    """Each `wis2l` command of a shell block that shows what it prints, as a test case."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        name = page.relative_to(ROOT).as_posix()
        text = page.read_text(encoding="utf-8")
        for block in SHELL_BLOCK.finditer(text):
            line = text.count("\n", 0, block.start("body")) + 1
            steps = console_steps if block["kind"] == "console" else bash_steps
            for variables, command_line, shown, exit_code in steps(block["body"]):
                command = command_line.split("  #")[0].strip()
                if not command.startswith("wis2l ") or not shown.strip():
                    continue
                for assignment in (block["env"] or "").split():
                    key, _, value = assignment.partition("=")
                    variables[key] = value
                marks = []
                if name in CONSOLE_NOT_FIXED_YET:
                    marks = [pytest.mark.xfail(reason="stale output", strict=True)]
                found.append(
                    pytest.param(
                        variables,
                        command,
                        shown,
                        exit_code,
                        id=f"{name}:{line}:{command}",
                        marks=marks,
                    )
                )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_wis2l(args: list[str], env: dict[str, str]) -> tuple[str, int]:
    """Run ``wis2l *args``; one that keeps running is read up to "Ctrl-C to stop", then
    stopped with SIGINT. Returns its output (stdout and stderr, as a terminal shows them)
    and its exit code."""
    with subprocess.Popen(
        [sys.executable, "-m", "wis2l_core.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        watchdog = threading.Timer(120, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            printed = []
            for line in proc.stdout:
                printed.append(line)
                if "Ctrl-C to stop" in line:
                    proc.send_signal(signal.SIGINT)
                    break
            proc.stdout.read()
            return "".join(printed), proc.wait(timeout=60)
        finally:
            watchdog.cancel()


@pytest.mark.slow
@pytest.mark.parametrize(("variables", "command", "shown", "exit_code"), shell_commands())
def test_shell_blocks_show_what_the_commands_print(
    variables: dict[str, str],
    command: str,
    shown: str,
    exit_code: int | None,
    wis2l_servers: Servers,
    wis2l_database_url: str,
) -> None:
    """A documented `wis2l` command prints what the page shows, and exits as it shows.

    ``<!-- console-env: NAME=value -->`` before a block sets a variable for it
    (``{closed_port}``: a port nobody listens on); `cmd1 && cmd2` runs both, as a shell
    would, and shows both outputs.
    """
    home = Path(tempfile.mkdtemp(prefix="wis2l-docs-console-"))
    home.chmod(0o711)  # wis2l dev, as root, hands its data to PostgreSQL's user
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WIS2L_", "DATABASE_"))},
        "DATABASE_URL": wis2l_database_url,
        "REDIS_URL": wis2l_servers.redis_url,
        "NATS_URL": wis2l_servers.nats_url,
        "WIS2L_NAMESPACE": "doc" + secrets.token_hex(4),
        "HOME": str(home),
        "TMPDIR": str(home),
        "PYTHONUNBUFFERED": "1",  # stdout and stderr in the order a terminal shows them
    }
    for name, value in variables.items():
        env[name] = value.format(closed_port=free_port())
    printed, returncode = "", 0
    try:
        for part in command.split(" && "):
            args = [arg.replace("~", str(home)) for arg in shlex.split(part)[1:]]
            output, returncode = run_wis2l(args, env)
            printed += output
            if returncode != 0:
                break
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert normalised(printed) == normalised(shown)
    if exit_code is not None:  # the page shows `$ echo $?`
        assert returncode == exit_code


def test_shell_block_parsers() -> None:
    """The parsers find commands, their shown output and exit code, and the exports."""
    console = "$ wis2l health\ncheck ok\n\nstatus: ok\n$ echo $?\n1\n"
    assert next(console_steps(console)) == ({}, "wis2l health", "check ok\n\nstatus: ok\n", 1)
    bash = (
        "export A=1 B='x y'   # why\n"
        "wis2l db migrate && wis2l db check\n"
        "# -> applied 0 migration(s)\n"
        "# -> checked 2 queries\n"
        "wis2l db status\n"
    )
    steps = list(bash_steps(bash))
    assert steps[0] == (
        {"A": "1", "B": "x y"},
        "wis2l db migrate && wis2l db check",
        "applied 0 migration(s)\nchecked 2 queries",
        None,
    )
    assert steps[1][1:3] == ("wis2l db status", "")  # shows nothing: not run
    ids = [param.id for param in shell_commands()]
    assert any(i.startswith("docs/getting-started.md:") for i in ids), ids
