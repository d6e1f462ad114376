"""What the benchmarks share: client worker processes, message counts, /proc CPU samples.

The benchmark scripts (``scripts/bench*.py``) start brokers and run every client in its own
process (``python -m scripts.benchkit.clients ROLE ...``), as users run them; each worker
prints one JSON line per event and one with its result. The scripts add the workers' counts
up and fail when any run lost an acknowledged message or handed out an unmarked repeat.
"""
