"""The documentation: the site builds with ``mkdocs build --strict``; README links resolve."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import npm_packages

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
