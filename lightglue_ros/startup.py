"""Ctrl-C and SIGTERM while a command starts: one line on stderr and exit code 130, no traceback.

Starting ``replay`` or ``lightglue-ros`` imports torch (and rclpy) and builds the networks, which
takes seconds. Python's default handlers print a KeyboardInterrupt traceback there (SIGINT) or
end the process without a word (SIGTERM). Importing this module first from an entry module
(``lightglue_ros.cli``, ``lightglue_ros.cli.replay``) in a process that one of our commands started
installs handlers that end the process at once: during the imports nothing has been opened or
written, so there is nothing to close. The command's main function then enters
``interrupt_on_signals()``, under which SIGINT raises KeyboardInterrupt and SIGTERM raises
``Terminated`` (a KeyboardInterrupt), so that later phases (model loading, the replay loop)
unwind through their ``except KeyboardInterrupt`` / ``finally`` clean-up.

Imported anywhere else (tests, a program using the library) this module changes nothing.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

__all__ = ['EXIT_INTERRUPTED', 'Terminated', 'exit_process', 'interrupt_on_signals',
           'started_by_entry_point', 'stop_raising_on_signals']

EXIT_INTERRUPTED = 130  # for SIGINT and SIGTERM alike, as documented in docs/replay.md
ENTRY_SCRIPTS = ('replay', 'lightglue-ros')  # setup.py console_scripts that import this
ENTRY_MODULES = {'lightglue_ros.cli.replay': 'replay', 'lightglue_ros.cli': 'lightglue-ros',
                 'lightglue_ros.cli.__main__': 'lightglue-ros'}  # a package runs its __main__
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every clean-up path written for Ctrl-C runs for it."""


def signal_name(interrupt: KeyboardInterrupt) -> str:
    """The signal an interrupt stands for: SIGTERM (``Terminated``) or SIGINT."""
    return 'SIGTERM' if isinstance(interrupt, Terminated) else 'SIGINT'


def _module_run() -> str | None:
    """MODULE of ``python -m MODULE``: __main__'s spec once MODULE runs; before that, while
    Python imports MODULE's package (``python -m lightglue_ros.cli`` imports the package, and so
    this module, before its __main__), the command line's word that named it."""
    spec = getattr(sys.modules.get('__main__'), '__spec__', None)
    if spec is not None:
        return spec.name
    if sys.argv and sys.argv[0] == '-m' and len(sys.orig_argv) >= len(sys.argv):
        # sys.argv is ['-m', *ARGS] then, and sys.orig_argv ends with MODULE, *ARGS.
        return sys.orig_argv[-len(sys.argv)].removeprefix('-m')
    return None


def _entry_name() -> str | None:
    """The command this process runs when it is one of ENTRY_SCRIPTS or ``python -m`` one of
    ENTRY_MODULES, else None (the node is neither: rclpy chains to the handler it finds, which
    must stay Python's own there)."""
    module = _module_run()
    if module in ENTRY_MODULES:
        return ENTRY_MODULES[module]
    name = Path(sys.argv[0]).name if sys.argv else ''
    return name if name in ENTRY_SCRIPTS else None


def started_by_entry_point() -> bool:
    """True in a process started by our console scripts or ``python -m lightglue_ros.cli.replay``
    / ``lightglue_ros.cli``."""
    return _entry_name() is not None


def _exit_now(signum: int, frame: Any) -> None:
    """While importing: nothing is open yet, so leave at once (no unwinding through imports)."""
    try:
        sys.stderr.write(f'{_entry_name() or "lightglue_ros"}: interrupted '
                         f'({signal.Signals(signum).name}) while starting\n')
        sys.stderr.flush()
    finally:
        os._exit(EXIT_INTERRUPTED)


def _raise(signum: int, frame: Any) -> None:
    if signum == signal.SIGTERM:
        raise Terminated('SIGTERM')
    raise KeyboardInterrupt


class _FirstSignalRaises:
    """Signal handler: the first SIGINT/SIGTERM raises (as ``_raise``); every later one is only
    reported on stderr, so that it cannot cut short the clean-up the first one started."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fired = False

    def __call__(self, signum: int, frame: Any) -> None:
        if not self.fired:
            self.fired = True
            _raise(signum, frame)
        sys.stderr.write(f'{self.name}: {signal.Signals(signum).name} ignored: already '
                         'shutting down\n')
        sys.stderr.flush()


def stop_raising_on_signals() -> None:
    """The clean-up after a signal has begun: from here on the handlers that
    ``interrupt_on_signals(repeat=False)`` installed only report SIGINT/SIGTERM, also one that
    came before and whose Python handler has not run yet (rclpy's own handler can end the
    spin first)."""
    for sig in SIGNALS:
        handler = signal.getsignal(sig)
        if isinstance(handler, _FirstSignalRaises):
            handler.fired = True


@contextmanager
def interrupt_on_signals(*, repeat: bool = True, name: str = 'lightglue_ros'
                         ) -> Iterator[None]:
    """Inside: SIGINT raises KeyboardInterrupt, SIGTERM raises Terminated (unless ignored); the
    previous handlers come back on exit. Only the main thread can set handlers; elsewhere this
    does nothing.

    ``repeat=False`` (the matcher node): only the first signal raises. Every later one inside
    the block writes ``NAME: SIGINT ignored: already shutting down`` to stderr and is otherwise
    ignored, and once a signal came SIGINT/SIGTERM are left ignored (SIG_IGN) on exit instead of
    getting the previous handlers back: the process is on its way out. A second Ctrl-C during
    that clean-up made the node abort (issue #20): a KeyboardInterrupt in the middle of the
    worker's join, or, once Python's teardown has put the default actions back, death by
    SIGINT (exit -2).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = _raise if repeat else _FirstSignalRaises(name)
    # A signal the parent set to be ignored (nohup, a background job) stays ignored.
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield
    finally:
        shutting_down = isinstance(handler, _FirstSignalRaises) and handler.fired
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_IGN if shutting_down else old)


def exit_process(code: int) -> NoReturn:
    """End a command's process with ``code`` (console scripts and ``python -m`` only).

    After an interruption (130) it leaves at once, streams flushed: the command has closed its
    outputs by then, and on a loaded machine the interpreter's own shutdown could still end the
    process as killed by SIGINT (-2) instead (seen 1 in 10 runs of the replay under load).
    """
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _guard_imports() -> None:
    if not started_by_entry_point() or threading.current_thread() is not threading.main_thread():
        return
    # Only over Python's defaults: a host program that set its own handlers keeps them.
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    for sig in SIGNALS:
        if signal.getsignal(sig) is defaults[sig]:
            signal.signal(sig, _exit_now)


_guard_imports()  # on purpose at import: see the module docstring
