"""Macros of the documentation site (mkdocs-macros): measured figures read
from docs/results/*.json at build time, and the reference pages generated
from the code. A missing file or figure fails the build.

In a page:  {{ fig("demo", "stages.classify.test.accuracy", "percent") }}
            {{ mean(["run_seed0", "run_seed1"], "wall_seconds", "minutes") }}
            {{ table("exports", "ground.rows", [["format", "format"]]) }}
            {{ measured("demo") }}   (the command, machine, commit, date)
            {{ config_reference() }}   {{ cli_reference() }}
"""

import ast
import inspect
import io
import os
import statistics
import tokenize
from typing import Any

import ml_collections

from roadflax.configs import default
from roadflax.results import headline, records

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def define_env(env) -> None:
  @env.macro
  def fig(name: str, key: str, style: str = "plain", digits: int = 1) -> str:
    """One figure of results file NAME, formatted (`records.formatted`)."""
    return records.formatted(
        records.lookup(records.read(RESULTS, name), key), style, digits
    )

  @env.macro
  def table(name: str, key: str, columns: list) -> str:
    """A markdown table of the rows (a list of objects) at `key` of results
    file NAME; each column [field, header] or [field, header, style]."""
    rows = records.lookup(records.read(RESULTS, name), key)
    lines = [
        "| " + " | ".join(column[1] for column in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
      cells = [
          records.formatted(records.lookup(row, column[0]), *column[2:])
          for column in columns
      ]
      lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

  @env.macro
  def mean(names: list, key: str, style: str = "plain", digits: int = 1) -> str:
    """The mean ± standard deviation of one figure over several results
    files (the seeds of one measurement)."""
    values = [records.lookup(records.read(RESULTS, n), key) for n in names]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return (
        f"{records.formatted(statistics.mean(values), style, digits)} ±"
        f" {records.formatted(spread, style, digits)}"
    )

  @env.macro
  def measured(name: str) -> str:
    """How results file NAME was measured, as one line."""
    record = records.read(RESULTS, name)
    up = "../" * env.page.file.src_uri.count("/")
    return (
        f"Measured on {record['date']} at commit `{record['commit']}` on"
        f" {record['machine']}: `{record['command']}`"
        f" ([{name}.json]({up}results/{name}.json))"
    )

  @env.macro
  def results_index() -> str:
    """A table of every results file: what measured it, and when."""
    lines = ["| file | date | commit | command |", "|---|---|---|---|"]
    for file_name in sorted(os.listdir(RESULTS)):
      if file_name.endswith(".json"):
        record = records.read(RESULTS, file_name[: -len(".json")])
        command = record["command"].replace("|", "\\|")
        lines.append(
            f"| [{file_name}](../results/{file_name}) | {record['date']} |"
            f" `{record['commit']}` | `{command}` |"
        )
    return "\n".join(lines)

  @env.macro
  def headline_table() -> str:
    return headline.table(RESULTS).replace("](docs/results/", "](results/")

  @env.macro
  def benchmark_table(name: str) -> str:
    """The table a benchmark suite prints, from its results file
    (model_benchmark, pipeline_benchmark or label_efficiency*)."""
    from roadflax.benchmark import label_efficiency
    from roadflax.benchmark import model_benchmark, pipeline_benchmark

    record = records.read(RESULTS, name)
    if name.startswith("label_efficiency"):
      return label_efficiency.markdown(record)
    settings = record["settings"]
    if name == "model_benchmark":
      return model_benchmark.table(
          record["figures"],
          image_size=settings["image_size"],
          batch_size=settings["model_batch_size"],
      )
    return pipeline_benchmark.table(
        record["figures"], settings["image_size"], settings["batch_size"]
    )

  @env.macro
  def config_reference() -> str:
    return config_table()

  @env.macro
  def cli_reference() -> str:
    return flag_table()


def config_table() -> str:
  """Markdown: the top-level config keys, then the fields of a stage and the
  values the two default stages give them."""
  config = default.get_config()
  source = inspect.getsource(default)
  comments = _comments_by_line(source)
  tree = ast.parse(source)
  functions = {
      node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)
  }
  rows = []
  for node in ast.walk(functions["get_config"]):
    if isinstance(node, ast.Assign) and isinstance(
        node.targets[0], ast.Attribute
    ):
      key = ast.unparse(node.targets[0]).removeprefix("config.")
      if key.startswith("stages.") or key == "stages":
        continue
      value = _lookup(config, key)
      if isinstance(value, ml_collections.ConfigDict):
        continue
      rows.append((key, value, _comment_of(node, comments)))
  fields = next(
      node
      for node in ast.walk(functions["stage"])
      if isinstance(node, ast.Call) and ast.unparse(node.func) == "dict"
  )
  stage_rows = []
  for keyword in fields.keywords:
    comment = _comment_of(keyword, comments)
    if isinstance(keyword.value, ast.Call):  # a nested ConfigDict({...})
      for key, value in zip(
          keyword.value.args[0].keys, keyword.value.args[0].values
      ):
        stage_rows.append((
            f"stages.NAME.{keyword.arg}.{ast.literal_eval(key)}",
            None if isinstance(value, ast.Call) else ast.literal_eval(value),
            comment,
        ))
        comment = ""
    else:
      stage_rows.append((
          f"stages.NAME.{keyword.arg}",
          ast.literal_eval(keyword.value),
          comment,
      ))
  defaults = default.stage()
  differing = [
      (f"stages.{name}.{field}", value, "")
      for name in config.stage_order
      for field, value in config.stages[name].items()
      if value != defaults[field]
  ]
  return "\n\n".join([
      _table(rows),
      (
          "### Stage fields\n\nEvery stage (`stages.NAME`) has these fields;"
          " `stage()` in `configs/default.py` fills them."
      ),
      _table(stage_rows),
      (
          "### The default stages\n\nWhere `pretrain` and `classify` differ"
          " from a stage's defaults:"
      ),
      _table(differing),
  ])


def flag_table() -> str:
  """Markdown: every flag of the `roadflax` command with its default."""
  from absl import flags

  from roadflax import cli

  rows = [
      (f"--{flag.name}", flag.default, flag.help)
      for flag in flags.FLAGS.get_key_flags_for_module(cli)
  ]
  return _table(rows, first="flag")


def _table(rows: list[tuple[str, Any, str]], first: str = "key") -> str:
  lines = [f"| {first} | default | what it is |", "|---|---|---|"]
  for key, value, comment in rows:
    text = " ".join(comment.split()).replace("|", "\\|") or "—"
    lines.append(f"| `{key}` | `{value!r}` | {text} |")
  return "\n".join(lines)


def _lookup(config: ml_collections.ConfigDict, key: str) -> Any:
  value = config
  for part in key.split("."):
    value = value[part]
  return value


def _comments_by_line(source: str) -> dict[int, tuple[str, bool]]:
  """Comment text by line number, and whether the line holds only it."""
  lines = source.splitlines()
  comments = {}
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      row = token.start[0]
      alone = not lines[row - 1][: token.start[1]].strip()
      comments[row] = (token.string.lstrip("#").strip(), alone)
  return comments


def _comment_of(node: ast.AST, comments: dict[int, tuple[str, bool]]) -> str:
  """The comment lines directly above `node` and those on its own lines."""
  above = []
  row = node.lineno - 1
  while row in comments and comments[row][1]:
    above.insert(0, comments[row][0])
    row -= 1
  inline = [
      comments[r][0]
      for r in range(node.lineno, node.end_lineno + 1)
      if r in comments and not comments[r][1]
  ]
  return " ".join(above + inline)
