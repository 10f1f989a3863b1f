"""Results: the row schema, run folders, saved results and their checks, statistics, report
tables, plots and the health of a row. Read by the CLI, written by the run package."""
