"""Even splits of an index range: the one rule every decomposition uses (slabs, FFT slabs, tiles).

[0, n) in `parts` contiguous ranges whose lengths differ by at most 1, the first n mod parts one longer.
"""

from __future__ import annotations


def part_bounds(n: int, parts: int, i: int) -> tuple[int, int]:
    """[start, stop) of part i of the even split of [0, n) into `parts` ranges."""
    base, extra = divmod(n, parts)
    start = i * base + min(i, extra)
    return start, start + base + (1 if i < extra else 0)


def even_split(n: int, parts: int) -> list[tuple[int, int]]:
    """All `parts` ranges of the even split of [0, n), in order."""
    return [part_bounds(n, parts, i) for i in range(parts)]
