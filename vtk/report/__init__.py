"""Ablation results as tables, exports and plots (`vtk report`).

- ``vtk.report.runs``: ``collect(dirs)`` finds every finished run and groups it into the
  ``Arm``s of its ablation (means and sds over seeds); ``warnings(arms)``.
- ``vtk.report.tables``: the one table model (``tables(arms)``: per ablation, rows of cells
  with the change vs the baseline arm) and the text of cells and headers.
- ``vtk.report.render``: the renderers: ``render_table`` (terminal), ``render_text``
  (markdown, csv, json), ``render_html`` (a page).
- ``vtk.report.figure``: ``figure`` / ``plot`` (a PNG).

The names below are the public ones; the modules import each other directly, never this
package, so importing it is importing them.
"""

from vtk.report.figure import figure, plot
from vtk.report.render import json_rows, render_html, render_table, render_text
from vtk.report.runs import Arm, collect, columns, warnings
from vtk.report.tables import recovery, tables

__all__ = ["Arm", "collect", "columns", "warnings", "tables", "recovery", "render_table",
           "render_text", "render_html", "json_rows", "figure", "plot"]
