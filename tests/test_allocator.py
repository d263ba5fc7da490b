"""engine/allocator.py: glibc malloc tuning is applied once, respects the user's own settings, is reported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = ("from halopaint.allocator import tune_malloc, retained_bytes; "
         "print(tune_malloc(), retained_bytes(2))")


def _probe(**env_changes) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HALOPAINT_MALLOC_TUNING", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_",
                        "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}
    env.update(env_changes)
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    return res.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")
def test_tuning_applies_and_respects_the_users_settings():
    assert _probe() == f"True {32 * 2**20 * 3}"          # 32 MiB per arena: main + 2 threads
    assert _probe(HALOPAINT_MALLOC_TUNING="0") == "False 0"
    assert _probe(MALLOC_TOP_PAD_="1048576") == "False 0"
    assert _probe(GLIBC_TUNABLES="glibc.malloc.trim_threshold=1") == "False 0"
