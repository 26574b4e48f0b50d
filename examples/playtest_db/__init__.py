"""The typed queries of own_tables/queries, written by ``wis2l db generate``."""
