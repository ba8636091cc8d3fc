"""Work units (DIL): durable, individually retried units of a source's work.

Layers: :mod:`.model` (the ``work_units`` config, :class:`Unit`, :class:`UnitPage`; a leaf the
components import) -> :mod:`.planning` (which units exist) -> :mod:`.executor` (running the due
ones beside :class:`~runtime.pipes.PipeRun`). The ledger itself is the state store's.
"""

from runtime.workunits.model import Unit, UnitPage, WindowsConfig, WorkUnitsConfig

__all__ = ["Unit", "UnitPage", "WindowsConfig", "WorkUnitsConfig"]
