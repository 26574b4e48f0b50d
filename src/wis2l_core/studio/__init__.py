"""``wis2l studio``: a local web UI over the database (the ``studio`` extra).

Tables from the catalog with keyset pages, filters and sorting; rows with their relations
both ways; the platform's data as its users think of it; a live panel of events; editing
through the repositories with ``--write``. See ``docs/studio.md``.
"""

from __future__ import annotations

from wis2l_core.studio.app import Studio, create_app
from wis2l_core.studio.server import StudioServer

__all__ = ["Studio", "StudioServer", "create_app"]
