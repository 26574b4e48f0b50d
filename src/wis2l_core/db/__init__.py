"""PostgreSQL: the pool, your own SQL, the repositories and the one error translation.

What an app reaches for: :class:`Database` (``wis.database``: the pool and your own SQL),
:class:`Transaction` (``async with wis.transaction() as tx``), the repository classes (for
type hints), :data:`Statement`/:data:`Params` (what the SQL methods take),
:func:`map_errors` (psycopg errors -> wis2l-core errors, for code on a raw connection)
and :class:`SchemaMissing` (the database was never migrated); :func:`load_queries`,
:class:`QueryFile` and :class:`Query` keep an app's own named queries in ``.sql`` files.
"""

from wis2l_core.db.builds import BuildRepository
from wis2l_core.db.components import ComponentRepository
from wis2l_core.db.deployments import DeploymentRepository
from wis2l_core.db.errors import SchemaMissing, map_errors
from wis2l_core.db.events import EventRepository
from wis2l_core.db.pool import Connection, Database
from wis2l_core.db.projects import ProjectRepository
from wis2l_core.db.queries import Params, QueryMethods, Statement
from wis2l_core.db.repositories import Repositories, Transaction
from wis2l_core.db.sql import Query, QueryFile, load_queries
from wis2l_core.db.templates import TemplateRepository
from wis2l_core.db.tokens import TokenRepository
from wis2l_core.db.users import UserRepository

__all__ = [
    "BuildRepository",
    "ComponentRepository",
    "Connection",
    "Database",
    "DeploymentRepository",
    "EventRepository",
    "Params",
    "ProjectRepository",
    "Query",
    "QueryFile",
    "QueryMethods",
    "Repositories",
    "SchemaMissing",
    "Statement",
    "TemplateRepository",
    "TokenRepository",
    "Transaction",
    "UserRepository",
    "load_queries",
    "map_errors",
]
