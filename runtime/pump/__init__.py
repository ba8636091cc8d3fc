"""The pump: when pipes run in the daemon (schedules, signals, retries, operator requests).

:mod:`runtime.pump.schedule` holds the pure timing rules; :mod:`runtime.pump.pumps` the per-pipe
run loops and the :class:`Scheduler` that owns them; :mod:`runtime.pump.interrupted` records runs
whose process died; :mod:`runtime.pump.units` when work units come due.
"""

from runtime.pump.pumps import Pump, Scheduler, has_pump
from runtime.pump.schedule import backoff, cron_next, interval_of, next_regular

__all__ = ["Pump", "Scheduler", "backoff", "cron_next", "has_pump", "interval_of", "next_regular"]
