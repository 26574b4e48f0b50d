"""PostgreSQL: pool, SQL files, migrations and one repository per table."""
