"""A Ctrl-C before training starts is remembered, so that code which swallows the KeyboardInterrupt cannot lose it.

Python turns Ctrl-C into a KeyboardInterrupt wherever the main thread happens to be; code there that catches
BaseException (or has a bare ``except:``) without re-raising swallows it, and the run goes on to the end as if
nothing was pressed (seen once running the CI script on a loaded machine: SIGINT 0.7 s into ``amapo
train``, then a whole run, exit 0).
``remembering_interrupts`` installs, for one command, a SIGINT handler that raises KeyboardInterrupt as Python's own
does and also remembers it; ``raise_if_interrupted`` raises it again where amapo is about to start something long
(a command's work once its options parse, training once the model and data are loaded). During training the
checkpoint-then-stop handler of ``amapo.train.reliability.InterruptCallback`` takes over.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_received = False


def _remember_and_raise(signum, frame) -> None:
    global _received
    _received = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def remembering_interrupts():
    """For the duration of one command: SIGINT remembered as well as raised (where Python's own handler is in
    place, in the main thread; a SIGINT the parent ignores stays ignored)."""
    global _received
    _received = False
    previous = signal.getsignal(signal.SIGINT)
    install = previous is signal.default_int_handler and threading.current_thread() is threading.main_thread()
    if install:
        signal.signal(signal.SIGINT, _remember_and_raise)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGINT, previous)
        _received = False


def raise_if_interrupted() -> None:
    """KeyboardInterrupt if a Ctrl-C came during this command and something swallowed it."""
    if _received:
        raise KeyboardInterrupt
