"""Running cells: one cell in lockstep with the reference, worker processes, the matrix,
benchmarks, per-process settings and caches, and the files a run writes.
"""
