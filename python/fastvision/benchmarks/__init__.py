"""Microbenchmarks of the fastvision ops against their references and the libraries users pick
instead: medians and ratios from one interleaved run, peak memory beside time.

This package is the harness (:mod:`fastvision.benchmarks.harness`: timing and memory methods,
input factories, writers); each family's benchmark lives with its application code in
``fastvision/tasks/<family>/``, and ``fastvision bench --family NAME [--size small|full]
[--device cpu|cuda] [--out DIR]`` runs one through :func:`fastvision.tasks.run_family`.
"""

from fastvision.benchmarks import harness

__all__ = ["harness"]
