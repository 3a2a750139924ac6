"""The HTML parity report: ``parity.html`` from a parity document, and merging documents.

Reads only the results JSON (``docs/parity-json.md``); imports no framework.
"""
