"""Sweep report: one sequence-length sweep from MLflow as a markdown table, a CSV and PNG plots.

The MLflow UI shows runs one at a time; a sweep's story (where each family stops, how its time grows
with length) needs them side by side. The same files are logged to the sweep's parent run under
`report/`, so the UI shows them next to the runs. Modules: model (what a report holds), query
(reading it from MLflow), fits (scaling exponents), render (markdown, CSV, JSON, console), plots, write.
"""

from seqbench.harness.report.model import ARTIFACT_FOLDER, DEFAULT_FORMATS, FILES, FORMATS, JSON_FILE, MIN_FIT_POINTS, Report, ReportRow, SCHEDULE_PLOT, ScalingFit, THROUGHPUT
from seqbench.harness.report.fits import fit_exponent, fit_window
from seqbench.harness.report.query import main_metric_of, row_of, run_label, select_runs
from seqbench.harness.report.render import format_metric, format_number, is_fraction_metric, metric_key, pivot_cell, progress_text, render_console_table, render_csv, render_json, render_markdown, schedule_markdown, status_text
from seqbench.harness.report.plots import plot_schedule
from seqbench.harness.report.write import check_out_dir, parse_formats, write_report

__all__ = [
    "ARTIFACT_FOLDER",
    "DEFAULT_FORMATS",
    "FILES",
    "FORMATS",
    "JSON_FILE",
    "MIN_FIT_POINTS",
    "Report",
    "ReportRow",
    "SCHEDULE_PLOT",
    "ScalingFit",
    "THROUGHPUT",
    "check_out_dir",
    "fit_exponent",
    "fit_window",
    "format_metric",
    "format_number",
    "is_fraction_metric",
    "main_metric_of",
    "metric_key",
    "parse_formats",
    "pivot_cell",
    "plot_schedule",
    "progress_text",
    "render_console_table",
    "render_csv",
    "render_json",
    "render_markdown",
    "row_of",
    "run_label",
    "schedule_markdown",
    "select_runs",
    "status_text",
    "write_report",
]
