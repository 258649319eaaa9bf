"""Lab fixtures: the demo, planted artifacts, synthetic heatmaps, the small CNN and its training loop.

Used by ``spray demo``, the tests and the benchmarks; nothing in the audit pipeline imports them.
"""
