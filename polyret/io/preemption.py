"""Stop long work at a consistent point on SIGTERM (preemption) or SIGINT, instead of dying mid-step.

Spot/preemptible VMs, GKE and SLURM send SIGTERM and kill the job a grace period later. Inside
`graceful_stop()` the two signals only record that a stop was asked for; the work checks `requested()`
at its consistent points (after a training step, between output shards or chunks), saves what it has
reached, and raises `polyret.errors.Preempted` through `stop_here(...)`. Jobs turn that into one line and
exit status 128 + the signal (143 for SIGTERM). A second signal while saving is only recorded, so a save
in progress is never cut short by it (the scheduler's SIGKILL still is; what was written before stays).

Guards nest and share one flag: a study that trains several models stops after the trainer inside it
has checkpointed. Outside the main thread (where Python cannot install handlers) the guard does nothing.

Multi-process JAX runs: `jax.distributed.initialize` installs its own SIGTERM listener (the preemption
sync manager that `multihost_utils.reached_preemption_sync_point` reads, so that all hosts agree on the
step to save); `graceful_stop(forward_sigint_to_sigterm=True)` leaves SIGTERM to it and turns SIGINT
into a SIGTERM to this process, so both reach the same protocol.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Iterator

from polyret.errors import Preempted

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_lock = threading.Lock()
_state: dict = {"signum": None, "depth": 0, "previous": {}}


def requested() -> int | None:
    """The signal that asked this process to stop (inside `graceful_stop`), or None."""
    return _state["signum"]


def exit_status(signum: int | None) -> int:
    """What a job returns when it stopped on `signum`: 128 + the signal, as a shell reports a process the
    signal ended (143 for SIGTERM, 130 for SIGINT)."""
    return 128 + int(signum or signal.SIGTERM)


def stop_here(message: str, signum: int | None = None) -> None:
    """Raise `Preempted(message)` for the recorded signal (call it after saving)."""
    signum = signum or requested() or signal.SIGTERM
    raise Preempted(message, signum)


def stop_if_requested(message: str) -> None:
    """At a consistent point (everything so far saved): raise `Preempted(message)` if a stop was asked."""
    if requested() is not None:
        stop_here(message)


def _record(signum: int, frame) -> None:  # noqa: ARG001 (signal handler signature)
    if _state["signum"] is None:
        _state["signum"] = signum
        log.warning("%s received: finishing the current step/chunk, saving, then stopping",
                    signal.Signals(signum).name)
    else:
        log.warning("%s received again: still saving; stopping as soon as the save is complete",
                    signal.Signals(signum).name)


def _forward_to_sigterm(signum: int, frame) -> None:
    first = _state["signum"] is None
    _record(signum, frame)
    if first:
        os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption listener: all hosts agree on a step


@contextlib.contextmanager
def graceful_stop(forward_sigint_to_sigterm: bool = False) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT are recorded instead of ending the process (see the module
    docstring). On leaving the outermost block the previous handlers come back and the flag is cleared."""
    main = threading.current_thread() is threading.main_thread()
    with _lock:
        outermost = _state["depth"] == 0
        _state["depth"] += 1
        if outermost and main:
            _state["signum"] = None
            handlers = {signal.SIGINT: _forward_to_sigterm} if forward_sigint_to_sigterm else {
                s: _record for s in SIGNALS}
            _state["previous"] = {s: signal.signal(s, h) for s, h in handlers.items()}
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0 and main:
                for s, h in _state["previous"].items():
                    signal.signal(s, h if h is not None else signal.SIG_DFL)
                _state["previous"] = {}
                _state["signum"] = None
