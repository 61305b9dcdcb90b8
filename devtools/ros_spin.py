"""Spin an rclpy executor on a background thread while the caller publishes and waits (tests
and benchmarks; devtools/ is not installed)."""
from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

SPIN_PERIOD_S = 0.05  # one spin_once waits this long for work: how soon stop() is noticed
STOP_TIMEOUT_S = 10.0  # how long stop() waits for a callback in progress


class BackgroundSpinner:
    """Runs ``executor.spin_once`` in a loop on a daemon thread from ``start()`` to ``stop()``.

    A loop of spin_once rather than ``executor.spin()``: stop() ends it without shutting the
    executor down, so the caller still removes and destroys its nodes in its own order. Use as
    ``with BackgroundSpinner(executor): ...`` or call start() and stop().
    """

    def __init__(self, executor: Any, *, name: str = 'ros_spin') -> None:
        self.executor = executor
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._spin, name=name, daemon=True)

    def start(self) -> BackgroundSpinner:
        self._thread.start()
        return self

    def _spin(self) -> None:
        while not self._stopping.is_set():
            self.executor.spin_once(timeout_sec=SPIN_PERIOD_S)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop spinning; True when the thread ended within ``timeout`` seconds."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> BackgroundSpinner:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
