"""The HTML parity report: ``parity.html`` from a parity document, and merging documents.

Reads only the results JSON (``docs/parity-json.md``); imports no framework.
"""

from equiv.report.merge import merge_documents
from equiv.report.render import render_html, write_html, write_report

__all__ = ["merge_documents", "render_html", "write_html", "write_report"]
