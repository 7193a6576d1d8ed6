import os

# LLVM's optimisation level 0 halves XLA:CPU compile time, which dominates the suite; HLO passes (fusion,
# layout, sharding) still run, so the programs tested are the ones users run, less LLVM's code tuning
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# identical programs compiled by several tests (e.g. the trainer built anew on each resume) compile once
jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "xla"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
