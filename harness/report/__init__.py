"""From results folders to tables, statistics, figures and reports.

``gather`` (folders -> tables), ``summary`` (per-condition summary), ``seed_statistics`` (means,
intervals, tests), ``tables``, ``figures``, ``html`` and ``build``
(report.md / report.html), ``compare`` (``harness compare``). Reads results; never trains.
"""
