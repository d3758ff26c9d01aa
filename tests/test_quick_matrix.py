"""The quick matrix: what `archbench run` does with no flags, and that it says what it leaves out."""

from __future__ import annotations

from harness.cli import build_matrix, make_parser
from harness.matrix import FULL_MATRIX
from harness.report import write_report
from harness.results import append_row, new_row, write_manifest
from workloads import quick_workloads, workload_names


def matrix_of(*flags: str, stored: dict | None = None):
    parser = make_parser()
    args = parser.parse_args(["run", *flags])
    return build_matrix(args, parser.commands["run"], stored or {})


def test_no_flags_is_the_quick_matrix_of_one_workload_per_model_and_two_repeats():
    quick = matrix_of()
    assert quick.quick and quick.repeat == 2 and quick.warmup == 1
    assert quick.workloads == quick_workloads() == ["stream-window", "wordcount", "fanout", "actor-pipeline"]
    assert quick.sizes == ["small"] and quick.workers == [2]


def test_naming_workloads_or_repeats_leaves_the_quick_matrix():
    chosen = matrix_of("--workloads", "wordcount")
    assert not chosen.quick and chosen.repeat == 3
    assert matrix_of("--repeat", "4").repeat == 4


def test_a_resumed_run_keeps_what_its_manifest_says():
    stored = matrix_of().as_dict()
    again = matrix_of(stored=stored)
    assert again.quick and again.repeat == 2
    full = matrix_of("--workloads", "all").as_dict()
    assert not matrix_of(stored=full).quick and matrix_of(stored=full).workloads == workload_names()


def test_the_report_of_a_quick_run_says_what_it_left_out(tmp_path):
    write_manifest(tmp_path, {"run_id": "r", "matrix": matrix_of().as_dict()})
    append_row(tmp_path / "results.jsonl", new_row(engine="serial", workload="wordcount", size="small", workers=2,
                                                   repeat=0, status="ok", run_s=0.1, units=10, unit="words"))
    text = write_report(tmp_path).read_text()
    assert "quick matrix" in text and FULL_MATRIX in text
