"""benchmarks.onnx_reference: the ONNX AGRoL-MLP is the same model as ours."""

import numpy as np
import pytest

from benchmarks import onnx_reference
from memmlp_jax import export
from memmlp_jax.models import configs
from memmlp_jax.models import factory

pytest.importorskip("onnxruntime")


def test_onnx_agrol_matches_the_jax_model():
  cfg = configs.get_config("agrol_mlp41", latent_dim=32, num_blocks=2,
                           window=8)
  variables = export.random_variables(cfg)
  session = onnx_reference.onnx_session(
      onnx_reference.agrol_onnx(cfg, variables["params"]), threads=1)
  window = np.random.RandomState(0).randn(1, 8, 54).astype(np.float32)
  (ours,) = session.run(None, {"sparse": window})
  expected = factory.build(cfg).apply(variables, window, None, None,
                                      train=False)["rot6d"]
  assert ours.shape == (1, 8, 132)
  np.testing.assert_allclose(ours, np.asarray(expected), atol=1e-4)
  assert np.abs(ours).max() > 1e-2  # not a graph of zeros


def test_models_with_memory_are_refused():
  cfg = configs.get_config("memmlp41")
  with pytest.raises(ValueError, match="only AGRoL-MLP"):
    onnx_reference.agrol_onnx(cfg, {})
