"""Benchmarks and probes (not part of the installed package): ``python -m benchmarks`` (``make bench``)."""
