"""Results files: their provenance, how figures are looked up and printed,
and the record command that writes them from a run."""

import json
import sys

import pytest

from roadflax.results import record, records


@pytest.mark.parametrize(
    "value, style, expected",
    [
        (0.96, "percent", "96.0%"),
        (1294.4, "int", "1,294"),
        (458.2, "seconds", "458 s"),
        (458, "minutes", "7 min 38 s"),
        (0.534, "ratio", "0.53x"),
        (3 * 2**30, "gib", "3.0 GiB"),
        ("0.27-0.45", "percent", "0.27-0.45"),
        (1.49, "plain", "1.49"),
        (1.4922365540507752, "plain", "1.492"),
        (68300.0, "plain", "68,300"),
        (392, "plain", "392"),
        (5.791e9, "giga", "5.79"),
    ],
)
def test_figures_are_printed_in_their_style(value, style, expected):
  assert records.formatted(value, style) == expected


def test_an_unknown_style_is_refused():
  with pytest.raises(ValueError, match="is not one of"):
    records.formatted(1, "percents")


def test_figures_are_looked_up_by_dotted_keys_and_a_missing_one_is_named():
  record = {"stages": {"classify": {"rows": [{"accuracy": 0.5}]}}}
  assert records.lookup(record, "stages.classify.rows.0.accuracy") == 0.5
  with pytest.raises(KeyError, match="no 'test'"):
    records.lookup(record, "stages.classify.test.accuracy")


def test_a_missing_results_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="no results file .*demo.json"):
    records.read(str(tmp_path), "demo")


def test_a_written_file_carries_its_provenance(tmp_path):
  path = tmp_path / "speed.json"
  records.write(str(path), {"images_per_second": 12.5}, "python -m x")
  written = json.loads(path.read_text())
  assert written["images_per_second"] == 12.5
  assert written["command"] == "python -m x"
  assert len(written["commit"]) >= 7  # this checkout's
  assert written["machine"] and written["date"]


def test_record_times_any_command(tmp_path):
  record.main([
      "--name=sleep",
      f"--output_dir={tmp_path}",
      "--",
      sys.executable,
      "-c",
      "import time; time.sleep(0.3)",
  ])
  written = records.read(str(tmp_path), "sleep")
  assert written["wall_seconds"] >= 0.3
  assert written["peak_memory_bytes"] > 1e6
  assert written["command"].endswith("-c 'import time; time.sleep(0.3)'")


def test_record_refuses_a_failing_command(tmp_path):
  with pytest.raises(SystemExit, match="exit status 3"):
    record.main([
        "--name=x",
        f"--output_dir={tmp_path}",
        "--",
        sys.executable,
        "-c",
        "raise SystemExit(3)",
    ])
  assert not (tmp_path / "x.json").exists()


def test_a_workdir_gives_each_stage_and_the_test_report(trained_workdir):
  figures = record.workdir_figures(trained_workdir)
  classify = figures["stages"]["classify"]
  assert set(figures["stages"]) == {"pretrain", "classify"}
  assert 0 <= classify["test"]["accuracy"] <= 1
  assert classify["test"]["accuracy"] == classify["test_accuracy"]
  assert classify["selected"] in ("best", "last")
  assert classify["test"]["calibration"]["temperature"] > 0
  assert "test" in figures["near_duplicates"]
