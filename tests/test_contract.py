"""docs/CONTRACT.md names only functions, classes and constants that exist.

Every `module.name` the contract writes (module = a memmlp_jax module's short
name) and every call that starts a line of a section about one module file
must resolve in the code, so the contract cannot drift from it silently.
"""

import importlib
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
CONTRACT = REPO / "docs" / "CONTRACT.md"


def _modules() -> dict[str, str]:
  """Short name -> dotted module name, for every memmlp_jax module."""
  found = {}
  for path in (REPO / "memmlp_jax").rglob("*.py"):
    if path.name == "__init__.py":
      continue
    dotted = ".".join(path.relative_to(REPO).with_suffix("").parts)
    found[path.stem] = dotted
  return found


_SUFFIXES = {"py", "csv", "json", "npy", "tsv", "md", "png", "txt", "flags"}


def _references(text: str, modules: dict[str, str]):
  """(line number, module, name) of every reference the contract makes."""
  section = entry = None
  for number, line in enumerate(text.splitlines(), 1):
    if line.startswith("#"):
      heading = re.search(r"(memmlp_jax/[\w/]+)\.py", line)
      section = heading.group(1).replace("/", ".") if heading else None
      continue
    if line.startswith("DIR/"):  # file layouts, not code
      continue
    for short, name in re.findall(r"(?<![\w./])([a-z_]+)\.([A-Za-z_]\w*)",
                                  line):
      if short in modules and name not in _SUFFIXES:
        yield number, modules[short], name
    file_line = re.match(r"(memmlp_jax/[\w/]+)\.py:(.*)", line)
    if file_line:  # an entry about one file, continued on indented lines
      entry, rest = file_line.group(1).replace("/", "."), file_line.group(2)
    elif not line.startswith(" "):
      entry, rest = None, line
    else:
      rest = line
    owner = entry or section
    if owner:
      # Calls written bare in a module's section: name(...), not x.name(
      # (a method) nor a/name( (a method of the object before).
      for name in re.findall(r"(?<![\w./])([A-Za-z_]\w*)\(", rest):
        if name not in _BUILTINS:
          yield number, owner, name


_BUILTINS = {"dict", "list", "tuple", "float", "int", "str", "bool", "len",
             "max", "min", "sum", "range", "np", "jnp", "concat", "sqrt"}


def test_contract_names_exist():
  modules = _modules()
  missing = []
  references = list(_references(CONTRACT.read_text(), modules))
  assert len(references) > 50  # the check reads the contract at all
  for number, module, name in references:
    if not hasattr(importlib.import_module(module), name):
      missing.append(f"CONTRACT.md:{number}: {module}.{name}")
  assert not missing, "\n".join(missing)
