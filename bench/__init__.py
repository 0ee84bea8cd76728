"""Benchmarks of the running service: ``uv run python -m bench <scenario> [options]``.

Each scenario is a module of this package with a ``main(argv) -> int`` (see ``bench/__main__.py``); it
starts the service itself, as a separate process with production settings, and prints its figures.
"""
