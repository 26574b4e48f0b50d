"""The caches, synchronous: generated from :mod:`wis2l_core.cache` by tools/async_to_sync.py."""
