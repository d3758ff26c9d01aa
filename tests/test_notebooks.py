"""Every lesson runs top to bottom with a real kernel, at tiny size, its solutions filled in and its checks strict."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

LESSONS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9]*.py"))


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_a_lesson_runs_top_to_bottom(lesson, monkeypatch, tmp_path):
    jupytext = pytest.importorskip("jupytext", reason="the lessons need the test extra: pip install -e '.[test]'")
    from nbclient import NotebookClient

    monkeypatch.setenv("ARCHBENCH_LESSON_SIZE", "tiny")
    monkeypatch.setenv("ARCHBENCH_LESSON_SOLUTIONS", "1")
    monkeypatch.setenv("ARCHBENCH_LESSON_STRICT", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = jupytext.read(lesson)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{lesson.name} drew no picture"
    printed = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "✓" in printed and "✗" not in printed, f"{lesson.name}: a check did not pass"
