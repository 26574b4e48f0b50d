"""A mkdocs hook: serve mermaid.js with the site, so diagrams render offline.

mkdocs-material draws ```mermaid blocks with mermaid.js, which it fetches from a CDN
unless the page already has it. This hook copies the npm ``mermaid`` package's single-file
bundle (installed by ``npm ci`` from the repository's package.json) into the site and
loads it on every page, so the built site needs no network. A missing bundle fails the
build rather than silently falling back to the CDN.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"
TARGET = "assets/javascripts/mermaid.min.js"


def on_config(config: Any) -> Any:
    """Load the bundled mermaid.js before the theme's scripts on every page."""
    if not BUNDLE.is_file():
        raise PluginError(
            f"{BUNDLE.relative_to(ROOT)} is missing: run `npm ci` in {ROOT} "
            "(it installs mermaid.js, which the docs serve so diagrams render offline)"
        )
    if TARGET not in [str(script) for script in config.extra_javascript]:
        config.extra_javascript.insert(0, TARGET)
    return config


def on_post_build(config: Any) -> None:
    """Copy the bundle into the built site."""
    target = Path(config.site_dir) / TARGET
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BUNDLE, target)
