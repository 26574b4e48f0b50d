"""DesignToken repository (`sql/queries/design_tokens.sql`)."""

from __future__ import annotations

from wis2l_core.db.repository import Repository

__all__ = ["TokenRepository"]


class TokenRepository(Repository):
    """DesignToken rows."""

    table = "design_tokens"
