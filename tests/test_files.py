"""Atomic writes: whole files, with ordinary permissions."""

import os
import stat

import pytest

from roadflax import files


def test_a_written_file_has_the_permissions_of_any_new_file(tmp_path):
  path = tmp_path / "report.json"
  files.atomic_write_json(str(path), {"accuracy": 0.9})
  plain = tmp_path / "plain.txt"
  plain.write_text("x")
  mode = stat.S_IMODE(os.stat(path).st_mode)
  assert mode == stat.S_IMODE(os.stat(plain).st_mode)
  assert mode & stat.S_IRGRP  # readable by the team, as with umask 022
  assert files.read_json(str(path)) == {"accuracy": 0.9}


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
  path = tmp_path / "out.txt"
  files.atomic_write_text(str(path), "old")

  def fail(f):
    f.write(b"half")
    raise RuntimeError("disk full")

  with pytest.raises(RuntimeError):
    files.atomic_write(str(path), fail)
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["out.txt"]
