"""The package layout's rules (docs/design.md §7), checked on the source."""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, package: str) -> set[str]:
  """The `package` modules `path` imports, at any level (lazy ones too)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      found.add(node.module)
      found |= {f"{node.module}.{a.name}" for a in node.names}
  return {m for m in found if m == package or m.startswith(package + ".")}


def test_no_import_circle_in_the_library():
  files = {_module_name(p): p for p in (REPO / "memmlp_jax").rglob("*.py")}
  graph = {name: {m for m in _imports(path, "memmlp_jax")
                  if m in files and m != name}
           for name, path in files.items()}
  # Packages' __init__ modules are where their children live, not an edge.
  graph = {n: {m for m in deps if not n.startswith(m + ".")}
           for n, deps in graph.items()}
  done, cycles = set(), []

  def visit(node, stack):
    if node in stack:
      cycles.append(stack[stack.index(node):] + [node])
      return
    if node in done:
      return
    for dep in sorted(graph[node]):
      visit(dep, stack + [node])
    done.add(node)

  for name in sorted(graph):
    visit(name, [])
  assert not cycles, cycles


def test_experiments_are_apps_only():
  """Nothing imports a function of an experiments module but its main()."""
  apps = {_module_name(p) for p in (REPO / "experiments").glob("*.py")}
  for path in [*REPO.glob("memmlp_jax/**/*.py"),
               *REPO.glob("benchmarks/*.py"), *REPO.glob("experiments/*.py"),
               *REPO.glob("tests/*.py")]:
    tree = ast.parse(path.read_text())
    aliases = {}
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module == "experiments":
        aliases |= {a.asname or a.name: a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module in apps:
        raise AssertionError(f"{path}: imports {node.module}'s names")
    if path.parts[-2] in ("memmlp_jax", "benchmarks") or "memmlp_jax" in \
        path.parts:
      assert not aliases, f"{path}: library code imports experiments"
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id in aliases}
    assert used <= {"main"}, (path, used)
