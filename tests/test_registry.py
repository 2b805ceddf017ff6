"""The registry of shared encoders: one load per key, and a slow load blocks only its own key."""

from __future__ import annotations

import threading

from gte_jax.engine.registry import Registry


def test_a_slow_load_blocks_only_its_own_key():
    release = threading.Event()
    calls: list[str] = []

    def factory(name_or_path: str, max_length: int = 512) -> tuple[str, int]:
        calls.append(name_or_path)
        if name_or_path == "slow":
            assert release.wait(60), "the slow load was never released"
        return name_or_path, max_length

    registry = Registry(factory)
    got: dict[int, object] = {}
    slow = [threading.Thread(target=lambda i=i: got.__setitem__(i, registry.get("slow"))) for i in range(2)]
    for t in slow:
        t.start()
    # While "slow" is loading, another model loads and returns at once (a global lock would wait here forever).
    assert registry.get("fast", max_length=8) == ("fast", 8)
    release.set()
    for t in slow:
        t.join(60)
    assert got[0] is got[1] == ("slow", 512)
    assert calls.count("slow") == 1  # two callers of one key share one load
