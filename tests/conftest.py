"""Suite-wide test settings.

Hypothesis: no per-example deadline and no "too slow" health check. Both time single examples with
the wall clock, so on a shared or slow CI machine a scheduling pause fails a correct example
(``DeadlineExceeded`` / ``FlakyFailure: Unreliable test timings``). Every property is still checked
on every example; each test's own ``@settings`` (such as ``max_examples``) still applies.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("statebus", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("statebus")
