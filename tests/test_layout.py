"""The package's layering: each subpackage imports only those below it, as
docs/design/layout.md and each package's docstring say."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "roadflax")
# What each subpackage may import of roadflax besides itself; "" is the
# shared basics at the top of the package (errors, files, console), "top"
# the package's faces to users (`roadflax.load`, the `roadflax` command).
MAY_IMPORT = {
    "": set(),
    "configs": {""},
    "data": {""},
    "datasets": {"", "data", "drives"},
    "models": {""},
    "runs": {"", "models"},
    "results": {"", "models", "runs"},
    "training": {"", "data", "datasets", "models", "runs", "results"},
    "export": {"", "data", "datasets", "models", "runs", "results"},
    "labelling": {"", "data", "datasets", "drives", "runs", "training"},
    "serve": {
        "",
        "data",
        "models",
        "runs",
        "results",
        "export",
        "drives",
        "labelling",
    },
    "drives": {""},
    "benchmark": {
        "",
        "configs",
        "data",
        "datasets",
        "models",
        "runs",
        "results",
        "training",
        "export",
        "labelling",
        "serve",
    },
}
MAY_IMPORT["top"] = set(MAY_IMPORT)
TOP_MODULES = ("roadflax.__init__", "roadflax.cli")


def _subpackage(module: str) -> str:
  """'roadflax.data.exif' -> 'data'; 'roadflax.errors' -> ''; 'roadflax.cli'
  -> 'top'."""
  if module in TOP_MODULES:
    return "top"
  parts = module.split(".")
  return parts[1] if len(parts) > 1 and parts[1] in MAY_IMPORT else ""


def _imports(path: str) -> set[str]:
  """roadflax modules that `path` imports (`from roadflax.x import y` counts
  as roadflax.x.y, which is right for modules and harmless for names)."""
  found = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found.update(f"{node.module}.{alias.name}" for alias in node.names)
  return {name for name in found if name.split(".")[0] == "roadflax"}


def _modules() -> dict[str, str]:
  """{dotted module name: path} of every module of the package."""
  modules = {}
  for folder, _, names in os.walk(PACKAGE):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        relative = os.path.relpath(path, ROOT)[: -len(".py")]
        modules[relative.replace(os.sep, ".")] = path
  return modules


def test_every_subpackage_is_known_and_documented():
  folders = {
      name
      for name in os.listdir(PACKAGE)
      if os.path.isfile(os.path.join(PACKAGE, name, "__init__.py"))
  }
  assert folders == set(MAY_IMPORT) - {"", "top"}
  for folder in folders:
    with open(os.path.join(PACKAGE, folder, "__init__.py")) as f:
      assert ast.get_docstring(ast.parse(f.read())), folder


def test_imports_only_point_downward():
  wrong = []
  for module, path in _modules().items():
    own = _subpackage(module)
    for imported in _imports(path):
      target = _subpackage(imported)
      if target != own and target not in MAY_IMPORT[own]:
        wrong.append(f"{module} imports {imported}")
  assert not wrong


def test_the_check_sees_a_wrong_import(tmp_path):
  path = tmp_path / "example.py"
  path.write_text(
      "from roadflax.training import train\nimport roadflax.data.exif\n"
  )
  assert _imports(str(path)) == {
      "roadflax.training.train",
      "roadflax.data.exif",
  }
  assert _subpackage("roadflax.training.train") not in MAY_IMPORT["data"]


def test_no_module_of_the_package_imports_the_tests():
  for module, path in _modules().items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module == "tests":
        # The benchmark builds a release-shaped set with the tests' fake
        # RSCD writer, from a checkout only.
        assert module == "roadflax.benchmark.suites", module
