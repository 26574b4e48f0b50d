"""A Django management command's shape, on ``wis2l_core.sync``: fail builds stuck pending.

In a Django project this file is ``<app>/management/commands/fail_stale_builds.py`` and
runs as ``python manage.py fail_stale_builds --older-than 3600``; the class below is
that command as is. Django is not needed to try it: without it, a stand-in for
``BaseCommand`` parses the arguments the same way::

    python examples/sync_command.py --older-than 3600 [--dry-run] [--seed N]

``--seed N`` first queues N builds of a new demo project (so there is something to fail).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from wis2l_core import BuildStatus, Settings
from wis2l_core.sync import Wis2l

if TYPE_CHECKING:  # the stand-in below has the part of Django's API the command uses
    BaseCommand = Any
else:
    try:
        from django.core.management.base import BaseCommand
    except ImportError:

        class BaseCommand:
            """The part of ``django.core.management.base.BaseCommand`` used here."""

            help = ""

            def __init__(self) -> None:
                self.stdout = sys.stdout

            def add_arguments(self, parser: argparse.ArgumentParser) -> None:
                pass

            def run_from_argv(self, argv: list[str]) -> None:
                parser = argparse.ArgumentParser(prog=argv[0], description=self.help)
                self.add_arguments(parser)
                self.handle(**vars(parser.parse_args(argv[1:])))


class Command(BaseCommand):  # type: ignore[misc]
    help = "Mark builds that stayed pending too long as failed (one transaction)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--older-than", type=float, default=3600, help="seconds pending")
        parser.add_argument("--dry-run", action="store_true", help="only list them")
        parser.add_argument("--seed", type=int, default=0, help="queue N demo builds first")

    def handle(self, *args: Any, **options: Any) -> None:
        # One runtime for the command's run: a management command is a short process.
        with Wis2l(Settings.from_env()) as wis:
            if options["seed"]:
                seed(wis, options["seed"])
            cutoff = datetime.now(UTC) - timedelta(seconds=options["older_than"])
            stale = [
                build
                for build in all_builds(wis, BuildStatus.PENDING)
                if build.created_at <= cutoff
            ]
            self.stdout.write(f"{len(stale)} build(s) pending since before {cutoff:%H:%M:%S}\n")
            if options["dry_run"] or not stale:
                return
            with wis.transaction() as tx:  # all of them or none
                for build in stale:
                    tx.builds.update(build.id, status="failed", log="failed: stale\n")
            self.stdout.write(f"failed {len(stale)} stale build(s)\n")
            health = wis.health()
            self.stdout.write(f"health {health.status.value}\n")


def all_builds(wis: Wis2l, status: BuildStatus) -> list[Any]:
    """Every build with ``status``, page after page."""
    found: list[Any] = []
    page = wis.builds.find_all(status=status, limit=100)
    found.extend(page)
    while page.next_cursor is not None:
        page = wis.builds.find_all(status=status, limit=100, after=page.next_cursor)
        found.extend(page)
    return found


def seed(wis: Wis2l, count: int) -> None:
    tag = uuid4().hex[:8]
    user = wis.users.create(email=f"cmd-{tag}@example.com", name="Cmd", subject=f"cmd|{tag}")
    project = wis.projects.create(owner_id=user.id, name="Demo", slug=f"demo-{tag}", engine="web")
    for i in range(count):
        wis.builds.create(project_id=project.id, target=f"target-{i}")


if __name__ == "__main__":
    Command().run_from_argv(sys.argv)
