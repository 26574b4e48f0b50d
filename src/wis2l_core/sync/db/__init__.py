"""The repositories, synchronous: generated from :mod:`wis2l_core.db` by tools/async_to_sync.py."""
