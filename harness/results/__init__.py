"""Result tables: the columns, declared once (``columns``), the Parquet store (``store``), and the
published numbers results are compared with (``reference``).

Knows nothing of training: the runner fills a row, this layer types, writes and reads it.
"""
