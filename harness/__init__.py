"""The harness: runs the matrix, checks every result, records rows, draws plots and reports."""
