"""How far an implementation may be from the reference at each step: calibrated from the
reference's own float32 and float64 rounding (``docs/tolerances.md``), and stored on disk.
"""
