"""The garbage collector's view of a Sluice process.

Python's cyclic garbage collector traverses every tracked container of the generation it
collects. After start-up that is the whole of a runtime's long-lived heap (modules, classes, the
validated config, pydantic's schemas: about 90,000 objects), and a full run allocates enough
short-lived entities to trigger a full (generation 2) collection every few batches, each walking
that heap again: a third of the CPU time of a 100,000-entity DTL run with hops (measured with
``gc.callbacks``: 1.8 s of 5.9 s). :func:`freeze_startup_heap` moves what is alive once the
runtime is open into the permanent generation (:func:`gc.freeze`), so collections walk only what
the runs allocate.

``sluice run`` and ``sluice serve`` call it once their runtime is open; an embedding program that
owns its process may do the same after opening its :class:`runtime.Runtime`.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect once, then freeze every object alive (:func:`gc.freeze`): later collections skip
    them. Objects frozen are never collected, even if they later become cyclic garbage; call it
    once, after start-up, not per run."""
    gc.collect()
    gc.freeze()
