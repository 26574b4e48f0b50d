"""Real clusters the cluster tests start from the ``embedded`` extra's binaries."""
