"""Developer sessions: ``nox -s tests lint typecheck`` (``nox -l`` lists them)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"

LINTED = ("src", "tests", "examples", "benchmarks", "noxfile.py")
"""What ruff checks and formats: the same paths as .ci/run."""


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite: the servers in WIS2L_TEST_*_URL, else an embedded stack."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check over the same paths as .ci/run."""
    session.install("ruff", "libcst")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)
    # wis2l_core.sync is generated from the asynchronous source: never out of step
    session.run("python", "tools/async_to_sync.py", "--check")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict")


@nox.session
def examples(session: nox.Session) -> None:
    """Run every example script against the embedded stack (or WIS2L_TEST_* servers)."""
    session.install("-e", ".[dev]")
    session.run("pytest", "tests/test_examples.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with ``mkdocs build --strict`` (into site/).

    ``npm ci`` first: the site serves mermaid.js from the npm package (docs/hooks/mermaid.py).
    """
    session.install("-e", ".[docs]")
    session.run("npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", external=True)
    session.run(
        "python",
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        "site",
        *session.posargs,
        env={"NO_MKDOCS_2_WARNING": "1"},
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: library vs raw drivers and SQLAlchemy (``-- --quick`` for a smoke run).

    Uses the WIS2L_TEST_* servers when set, else an embedded stack. Writes
    benchmarks/results/latest.json and docs/img/performance.png; targets are reported,
    never enforced (exit 0).
    """
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
