"""What a run keeps: the parity document (``docs/parity-json.md``), the journal that lets an
interrupted run resume, and the cells' measured durations.
"""
