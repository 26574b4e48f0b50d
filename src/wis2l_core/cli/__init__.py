"""The ``wis2l`` command line."""
