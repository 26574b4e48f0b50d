"""SQLAlchemy ORM classes for the peer case (imported only when SQLAlchemy is installed).

No ``from __future__ import annotations`` here: SQLAlchemy reads the ``Mapped[...]``
annotations at class creation.
"""

import datetime
import uuid
from typing import Any

from sqlalchemy import ARRAY, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["ComponentRow", "UserRow"]


class Base(DeclarativeBase):
    """The declarative base of the benchmark's mapped classes."""


class UserRow(Base):
    """``users``."""

    __tablename__ = "users"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    email: Mapped[str]
    name: Mapped[str]
    subject: Mapped[str]
    role: Mapped[str]
    created_at: Mapped[datetime.datetime]
    updated_at: Mapped[datetime.datetime]


class ComponentRow(Base):
    """``components``."""

    __tablename__ = "components"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    project_id: Mapped[uuid.UUID]
    name: Mapped[str]
    language: Mapped[str]
    code: Mapped[str]
    prompt: Mapped[str | None]
    model: Mapped[str | None]
    experts: Mapped[list[str]] = mapped_column(ARRAY(Text))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB)
    version: Mapped[int]
    created_at: Mapped[datetime.datetime]
    updated_at: Mapped[datetime.datetime]
