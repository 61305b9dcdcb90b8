"""Rate-limited warnings: at most one log line per kind of problem and period."""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable


class Throttle:
    """At most one message per key every ``period_s`` seconds.

    ``throttle(key)`` returns None when the message is to be suppressed, else the number of
    messages of that key suppressed since the last one that passed.
    """

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, key: str) -> int | None:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._suppressed[key] += 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)
