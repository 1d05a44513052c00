"""Carbon-intensity providers (Electricity Maps, WattTime, UK Carbon Intensity, CSV trace, static), their cache
in the database, the degradation-aware signal the daemon uses, and the refresh job that feeds it.

The daemon needs three calls::

    signal = build_signal(CarbonConfig.from_file(path), sessions, clock)   # a CarbonSignal
    refresh_zones(signal, clock)                                            # an APScheduler interval job
    signal.status(zone)                                                     # ok / degraded, reason, age_s
"""

from scheduler.carbon.providers.base import IntensityPoint, SignalIndexPoint
from scheduler.carbon.providers.config import CarbonConfig
from scheduler.carbon.providers.refresh import RefreshOutcome, refresh_zones
from scheduler.carbon.providers.signal import IntensityReading, ProviderSignal, SignalPolicy, ZoneStatus, build_signal
from scheduler.errors import BadCredentials, BadResponse, ProviderError, ProviderUnavailable, RateLimited, StaleData

__all__ = [
    "BadCredentials", "BadResponse", "CarbonConfig", "IntensityPoint", "IntensityReading", "ProviderError",
    "ProviderSignal", "ProviderUnavailable", "RateLimited", "RefreshOutcome", "SignalIndexPoint", "SignalPolicy",
    "StaleData", "ZoneStatus", "build_signal", "refresh_zones",
]
