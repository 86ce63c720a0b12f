"""The documentation: the site builds in strict mode, every figure it cites
comes from a results file that exists, the README's headline table is the
results files', the README stays a landing page, and the commands and Python
snippets of the docs run against the code as it is."""

import glob
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys

from absl import flags
import pytest
import yaml

import roadflax
from roadflax import cli, configs
from roadflax.results import headline, records
from tests import helpers

DOCS = os.path.join(helpers.ROOT, "docs")
README = os.path.join(helpers.ROOT, "README.md")
PAGES = sorted(glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True))
# A results file cited by a macro: fig("NAME", ...), measured("NAME"), ...,
# or mean(["NAME", "NAME"], ...).
CITATION = re.compile(
    r'\{\{\s*(?:fig|measured|table|benchmark_table)\(\s*"([^"]+)"'
)
CITED_LIST = re.compile(r"\{\{\s*mean\(\s*\[([^\]]*)\]")


def _cited(text: str) -> list[str]:
  names = CITATION.findall(text)
  for names_list in CITED_LIST.findall(text):
    names += re.findall(r'"([^"]+)"', names_list)
  return names


def _build(project: str, site: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", site],
      cwd=project,
      capture_output=True,
      text=True,
      timeout=600,
      env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
  )


def _copy_of_project(tmp_path) -> str:
  """The docs and what they read, in a folder of their own."""
  project = tmp_path / "project"
  project.mkdir()
  shutil.copytree(DOCS, project / "docs")
  for name in ("mkdocs.yml", "README.md", "CHANGELOG.md"):
    shutil.copy(os.path.join(helpers.ROOT, name), project / name)
  return str(project)


def _page_texts() -> dict[str, str]:
  texts = {}
  for path in [*PAGES, README]:
    with open(path) as f:
      texts[os.path.relpath(path, helpers.ROOT)] = f.read()
  return texts


@pytest.mark.slow
def test_the_site_builds_in_strict_mode(tmp_path):
  result = _build(helpers.ROOT, str(tmp_path / "site"))
  assert result.returncode == 0, result.stderr[-3000:]
  api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
  for name in ("roadflax.load", "Predictions", "Model"):
    assert name in api
  config = tmp_path / "site" / "reference" / "config" / "index.html"
  assert "stages.NAME.select" in config.read_text()


@pytest.mark.slow
def test_a_page_citing_a_missing_results_file_fails_the_build(tmp_path):
  project = _copy_of_project(tmp_path)
  page = os.path.join(project, "docs", "study", "measured.md")
  with open(page, "a") as f:
    f.write('\n{{ fig("no_such_results", "accuracy", "percent") }}\n')
  result = _build(project, str(tmp_path / "site"))
  assert result.returncode != 0
  assert "no results file" in result.stdout + result.stderr


def test_every_cited_results_file_exists():
  cited = {
      (page, name)
      for page, text in _page_texts().items()
      for name in _cited(text)
  }
  assert cited, "no page cites a results file"
  missing = [
      f"{page}: {name}"
      for page, name in sorted(cited)
      if not os.path.isfile(os.path.join(DOCS, "results", f"{name}.json"))
  ]
  assert not missing


def test_every_results_file_says_how_it_was_measured():
  for path in glob.glob(os.path.join(DOCS, "results", "*.json")):
    record = records.read(os.path.dirname(path), os.path.basename(path)[:-5])
    assert {"command", "machine", "commit", "date"} <= set(record), path


@pytest.mark.parametrize("block", sorted(headline.BLOCKS))
def test_the_readme_tables_are_the_results_files(block):
  with open(README) as f:
    assert headline.readme_block(f.read(), block) == headline.BLOCKS[block]()


def test_the_readme_is_a_landing_page_linking_every_page():
  with open(README) as f:
    text = f.read()
  assert len(text.splitlines()) <= 200
  with open(os.path.join(helpers.ROOT, "mkdocs.yml")) as f:
    nav = yaml.safe_load(f.read().replace("!!python", "#"))["nav"]

  def pages(entries):
    for entry in entries:
      value = entry if isinstance(entry, str) else next(iter(entry.values()))
      if isinstance(value, list):
        yield from pages(value)
      else:
        yield value

  unlinked = [
      page
      for page in pages(nav)
      if page not in ("index.md", "changelog.md")
      and f"](docs/{page})" not in text
  ]
  assert not unlinked
  assert "](CHANGELOG.md)" in text


def _commands() -> list[tuple[str, list[str]]]:
  """Every roadflax command line in the docs' shell blocks."""
  found = []
  for page, text in _page_texts().items():
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
      block = block.replace("\\\n", " ")
      for line in block.splitlines():
        for part in re.split(r"&&|;", line.split("  #")[0]):
          words = shlex.split(part, comments=True)
          if words[:2] == ["python", "main.py"]:
            found.append((page, words[2:]))
          elif words[:1] == ["roadflax"]:
            found.append((page, words[1:]))
          elif words[:2] == ["python", "-m"]:
            found.append((page, ["-m", words[2]]))
  return found


def test_the_docs_commands_name_flags_configs_and_keys_that_exist():
  commands = _commands()
  assert len(commands) > 20
  known = {flag.name for flag in flags.FLAGS.get_key_flags_for_module(cli)}
  problems = []
  for page, words in commands:
    if words[0] == "-m":
      if importlib.util.find_spec(words[1]) is None:
        problems.append(f"{page}: no module {words[1]}")
      continue
    config = None
    for word in words:
      name, _, value = word.removeprefix("--").partition("=")
      if word == "--version":
        continue
      if name == "config":
        if re.search(r"\b[A-Z]{3,}\b", value):  # a placeholder: NAME.py
          continue
        path, _, argument = configs.resolve(value).partition(":")
        path = os.path.join(helpers.ROOT, path)
        if not os.path.isfile(path):
          problems.append(f"{page}: no config {value}")
          continue
        spec = importlib.util.spec_from_file_location("doc_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = (
            module.get_config(argument) if argument else module.get_config()
        )
      elif name.startswith("config."):
        key = name[len("config.") :]
        try:
          records.lookup(config.to_dict(), key)
        except (KeyError, AttributeError):
          problems.append(f"{page}: no config key {key} in {words}")
      elif name not in known:
        problems.append(f"{page}: no flag --{name}")
  assert not problems


def test_the_docs_python_snippets_run(trained_workdir, data_root):
  image = next(glob.iglob(os.path.join(data_root, "test", "*", "*")))
  ran = 0
  for page, text in _page_texts().items():
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
      compile(block, page, "exec")
      if 'roadflax.load("runs/demo")' not in block:
        continue
      code = block.replace('"runs/demo"', repr(trained_workdir))
      code = re.sub(r'\[("[^"]+\.(?:jpg|png)",? ?)+\]', repr([image]), code)
      namespace = {}
      exec(compile(code, page, "exec"), namespace)
      assert namespace["result"].classes[0] is not None, page
      ran += 1
  assert ran >= 2


def test_the_version_is_printed_and_has_a_changelog_entry():
  result = subprocess.run(
      [sys.executable, "main.py", "--version"],
      cwd=helpers.ROOT,
      capture_output=True,
      text=True,
      check=True,
  )
  assert result.stdout.strip() == f"roadflax {roadflax.__version__}"
  with open(os.path.join(helpers.ROOT, "CHANGELOG.md")) as f:
    assert f"## [{roadflax.__version__}] - " in f.read()


def _docs_macros():
  spec = importlib.util.spec_from_file_location(
      "docs_macros", os.path.join(DOCS, "macros.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_the_reference_tables_list_every_config_key_and_flag():
  from roadflax.configs import default

  macros = _docs_macros()
  config_table = macros.config_table()

  def leaves(tree, prefix=""):
    for key, value in tree.items():
      if isinstance(value, dict):
        yield from leaves(value, f"{prefix}{key}.")
      else:
        yield f"{prefix}{key}"

  for key in leaves(default.get_config().to_dict()):
    if not key.startswith("stages."):
      assert f"`{key}`" in config_table
  for key in leaves(default.stage().to_dict()):
    assert f"`stages.NAME.{key}`" in config_table
  flag_table = macros.flag_table()
  for flag in flags.FLAGS.get_key_flags_for_module(cli):
    assert f"`--{flag.name}`" in flag_table
