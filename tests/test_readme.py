"""The README's promises: its two commands, and its own-workload example runs everywhere."""

from __future__ import annotations

import re
from pathlib import Path

from harness.results import read_rows
from test_runner import archbench

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    install_and_run, install_and_test = block
    assert install_and_run.endswith("archbench run") and "pip install -e '.[all]'" in install_and_run
    assert install_and_test.endswith("python -m pytest")
    assert install_and_test in (ROOT / ".ci" / "run").read_text()


def test_the_own_workload_example_runs_on_serial_and_pool(tmp_path):
    example = next(b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "class SumByDigit" in b)
    path = tmp_path / "my_workload.py"
    path.write_text(example)
    out = tmp_path / "run"
    archbench("run", "--workload-file", str(path), "--workloads", "sum-by-digit", "--engines", "serial,pool",
              "--size", "tiny", "--repeat", "1", "--out", str(out), "--no-plots", check=True)
    assert {(r["engine"], r["status"]) for r in read_rows(out)} == {("serial", "ok"), ("pool", "ok")}
