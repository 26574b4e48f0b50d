"""Deployment repository (`sql/queries/deployments.sql`)."""

from __future__ import annotations

from wis2l_core.db.repository import Repository

__all__ = ["DeploymentRepository"]


class DeploymentRepository(Repository):
    """Deployment rows."""

    table = "deployments"
