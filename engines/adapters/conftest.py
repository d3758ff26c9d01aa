"""Doctest collection for the adapters: the modules that run only inside Flink's
own environment (they import pyflink at the top) are skipped where pyflink is
not importable -- the project's own venv never has it (`archbench setup flink`
puts it in a separate one)."""

import importlib.util

FLINK_ONLY = ["flink_translate.py", "flink_tables.py"]

collect_ignore = [] if importlib.util.find_spec("pyflink") else FLINK_ONLY
