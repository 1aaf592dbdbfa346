"""Flags several command lines (experiments/) share, defined in one place.

Each app keeps its flag names and its defaults; what is shared is the
definition, so that every app can be imported into one process (the tests
call their ``main`` in-process under ``absl.testing.flagsaver``):

- the flags with one meaning everywhere are defined here with one help
  text: the run (``workdir``; ``model_workdir`` for the apps that fall back
  on the shipped model without it) and where clips come from
  (``clip_source``: protocol, data_dir, prepared_dir, body_model, lists_dir,
  bvh_dir, bvh_map);
- ``define`` defines any other name that several apps use with their own
  help (out, input, listen...): the first app imported defines it, later
  ones reuse it;
- an app's defaults are the values it passes here; it re-applies them with
  ``use_defaults`` first thing in ``main`` (another app imported into the
  same process may have defined the flag with its own), and marks its
  required flags only when it runs as a program (``require``), since absl's
  required-flag check would bind every app in the process.

The flags count as the calling app's own (its --helpshort lists them).
"""

import os

from absl import flags

from memmlp_jax.data import protocols

FLAGS = flags.FLAGS
# Flags defined through this module belong to the app that asked for them.
flags.disclaim_key_flags()

_DEFINE = {"string": flags.DEFINE_string, "enum": flags.DEFINE_enum,
           "bool": flags.DEFINE_bool, "integer": flags.DEFINE_integer,
           "float": flags.DEFINE_float, "list": flags.DEFINE_list}


def define(kind: str, name: str, default, help_text: str, *args, **kwargs):
  """``flags.DEFINE_<kind>`` unless another app defined ``name`` already.

  Returns the default, for the app's ``use_defaults``.
  """
  if name not in FLAGS:
    _DEFINE[kind](name, default, *args, help=help_text, **kwargs)
  flags.declare_key_flag(name)
  return default


def use_defaults(defaults: dict) -> None:
  """Sets ``defaults`` ({flag name: value}) on every flag not given."""
  for name, value in defaults.items():
    FLAGS.set_default(name, value)


def require(*names: str) -> None:
  """Marks flags required; call in ``if __name__ == "__main__":`` only."""
  flags.mark_flags_as_required(list(names))


def workdir(default=None, help_text: str = "The training run (its folder: "
            "config.json, checkpoints, metrics).") -> dict:
  """--workdir; returns {name: default} for ``use_defaults``."""
  return {"workdir": define("string", "workdir", default, help_text)}


def model_workdir(purpose: str) -> dict:
  """--workdir of an app that runs a trained model (``purpose``: "to
  predict with"...); without it the app runs the shipped model
  (memmlp_jax.pretrained.resolve). Returns {name: default}."""
  return workdir(help_text=(
      f"Training run {purpose}, or a release file; default: the shipped "
      "model (pretrained/README.md; $MEMMLP_PRETRAINED names another "
      "file)."))


def free_data_dir() -> str:
  """$MEMMLP_DATA, else ../shared/data: where the free mocap sits."""
  return os.environ.get("MEMMLP_DATA", os.path.join("..", "shared", "data"))


def clip_source(*, protocol=None, data_dir=None, prepared_dir=None,
                lists_dir=None, bvh_dir: bool = False,
                reads_prepared: bool = True) -> dict:
  """Where clips come from; returns {name: default} for ``use_defaults``.

  Args:
    protocol: the default --protocol (None: none unless given).
    data_dir: the default --data_dir.
    prepared_dir: the default --prepared_dir (None: prepared/<protocol>).
    lists_dir: the default --lists_dir (protocol s1's list files).
    bvh_dir: also define --bvh_dir (clips from a folder of .bvh files).
    reads_prepared: define --prepared_dir (not for the app that writes one).
  """
  defaults = {
      "protocol": define("enum", "protocol", protocol,
                         "Data protocol (docs/design.md §2).",
                         protocols.NAMES),
      "data_dir": define("string", "data_dir", data_dir,
                         "Data root: the free mocap folders, or the AMASS "
                         "root for s1/s2/s3."),
      "body_model": define("string", "body_model", None,
                           "AMASS protocols: the SMPL-H male model.npz."),
      "lists_dir": define("string", "lists_dir", lists_dir,
                          "Protocol s1: folder of the "
                          "<Subset>_train/test.txt lists."),
      "bvh_map": define("string", "bvh_map", None,
                        "Joint map of .bvh clips: a JSON file, or a shipped "
                        "map's name (cmu_bvh, mixamo, generic)."),
  }
  if reads_prepared:
    defaults["prepared_dir"] = define(
        "string", "prepared_dir", prepared_dir, "Prepared dataset folder "
        "(default prepared/<protocol>; reused when up to date).")
  if bvh_dir:
    defaults["bvh_dir"] = define("string", "bvh_dir", None,
                                 "Or clips from every .bvh in this folder.")
  return defaults
