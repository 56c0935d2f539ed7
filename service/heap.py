"""Keeping the cyclic garbage collector off the long-lived heap.

A full collection walks every tracked object (~200k after start-up: modules, models,
the apps) while holding the GIL, ~0.1 s on a 2-core CPU, and the engine thread stalls
for it like everyone else. Once the models are loaded, `freeze()` moves what is alive
into the permanent generation, so collections scan request garbage only (refcounting
still frees frozen objects). A retired engine (hot reload) may sit in reference cycles
that only the collector can break: `refreeze()` lets it see everything once more.
"""

from __future__ import annotations

import gc


def freeze() -> None:
    gc.collect()
    gc.freeze()


def refreeze() -> None:
    """Collect across the frozen heap too (after dropping a model), then freeze again."""
    if gc.get_freeze_count():
        gc.unfreeze()
        freeze()
