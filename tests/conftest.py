"""Test-session setup shared by every test module."""

from memmlp_jax import host_memory

# Before any test runs JAX: the CLIs do the same in their main().
host_memory.reuse_freed_memory()
