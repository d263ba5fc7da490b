"""Build and load the hand-vectorised C kernels (kernels/native.c) with the system C compiler, at first use.

`library(filters, big_kernel, small_kernel, tail_widths)` returns the compiled library (ctypes; its functions
`block1_reduce`, `mix_xdirect` and `epilogue_tail` release the GIL while they run) or None where it cannot be
had, with the reason in `unavailable_reason()`. It is built once per architecture and machine: `$CC` (default
`cc`) with `-O3 -march=native -ffp-contract=fast` (without -march=native where the compiler refuses it), into
`$HALOPAINT_CACHE/native` (default `~/.cache/halopaint/native`) under a name hashed from the source, the
flags, the compiler's version and the CPU's identity, so that a shared home directory serves machines with
different instruction sets. A build writes to a private temporary file and renames it into place: concurrent
MPI ranks never load a partial file. `HALOPAINT_NATIVE=0` disables them (the fused CPU path then runs its
torch/oneDNN and numba code alone).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("native.c")
ENV_SWITCH = "HALOPAINT_NATIVE"
FLAGS = ["-O3", "-ffp-contract=fast", "-fPIC", "-shared", "-std=c11"]
ARCH_FLAGS = (["-march=native"], [])           # tried in turn
BUILD_TIMEOUT_S = 120

_reasons: dict[tuple, str] = {}


def cache_dir() -> Path:
    root = os.environ.get("HALOPAINT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "halopaint")
    return Path(root) / "native"


def _cpu_identity() -> str:
    """The instruction sets -march=native compiles for: the CPU model and flags lines of /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _compiler() -> list[str]:
    return os.environ.get("CC", "cc").split()


def _compiler_version(cc: list[str]) -> str:
    out = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise OSError(f"{' '.join(cc)} --version failed")
    return out.stdout


def _build(defines: list[str]) -> Path:
    cc = _compiler()
    source = SOURCE.read_bytes()
    version = _compiler_version(cc)
    errors = []
    for arch in ARCH_FLAGS:
        flags = [*FLAGS, *arch, *defines]
        key = hashlib.sha256(b"\0".join([source, " ".join([*cc, *flags]).encode(), version.encode(),
                                         _cpu_identity().encode()])).hexdigest()[:20]
        target = cache_dir() / f"native-{key}.so"
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            out = subprocess.run([*cc, *flags, "-o", tmp, str(SOURCE)], capture_output=True, text=True,
                                 timeout=BUILD_TIMEOUT_S)
            if out.returncode == 0:
                os.replace(tmp, target)
                return target
            errors.append((out.stderr.strip().splitlines() or ["no message"])[-1])
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise OSError(f"{' '.join(cc)} could not compile {SOURCE.name}: {errors[-1]}")


MAX_WIDTH = 64                                  # native.c's MAXW: widest layer the tail kernel holds


@functools.lru_cache(maxsize=None)
def library(filters: int, big_kernel: int, small_kernel: int, tail_widths: tuple[int, ...]):
    """The C kernels compiled for this architecture (ctypes.CDLL with argument types set), or None
    (reason in unavailable_reason(...) with the same arguments)."""
    key = (filters, big_kernel, small_kernel, tuple(tail_widths))
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        _reasons[key] = f"disabled by {ENV_SWITCH}=0"
        return None
    if max(3 * filters, *tail_widths) > MAX_WIDTH or not tail_widths:
        _reasons[key] = f"layers wider than {MAX_WIDTH} channels or no tail"
        return None
    try:
        path = _build([f"-DNF={filters}", f"-DKA={big_kernel}", f"-DKB={small_kernel}",
                       f"-DNTAIL={len(tail_widths)}", f"-DTAIL_WIDTHS={','.join(map(str, tail_widths))}"])
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as exc:
        _reasons[key] = str(exc)
        return None
    p, i, f, lng = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_long
    lib.block1_reduce.argtypes = [p, i, i, i, i, p, p, p, p, p, f, p, p, i, p, p]
    lib.epilogue_tail.argtypes = [i, i, i, i, p, lng, lng, lng, lng, p, lng, lng, lng, p, lng, lng, lng, lng,
                                  p, p, f, p]
    lib.mix_xdirect.argtypes = [i, i, i, i, p, p, p, p, p, p, p, p]
    lib.block1_reduce.restype = lib.epilogue_tail.restype = lib.mix_xdirect.restype = None
    return lib


def unavailable_reason(filters: int, big_kernel: int, small_kernel: int, tail_widths: tuple[int, ...]) -> str | None:
    """Why library(...) returned None (None if it did not, or was not asked)."""
    return _reasons.get((filters, big_kernel, small_kernel, tuple(tail_widths)))
