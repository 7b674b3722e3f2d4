"""Process-level matters of a training run: device, RNG state, threads, denormals, Ctrl-C.

Anything the run changes for the whole process (torch's thread count, flushing of
denormal floats, the SIGINT handler) is restored to its previous value when training
ends, so calling ``seqlab.fit`` leaves the caller's process as it found it.
"""

from __future__ import annotations

import logging
import signal
import threading

import torch

from seqlab.errors import ConfigError

logger = logging.getLogger("seqlab")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available; use auto or cpu")
    return device


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def flushing_denormals() -> bool:
    """Whether the CPU flushes denormal floats to zero now. torch offers no getter, so
    multiply a float32 denormal by one and see whether it survives."""
    return (torch.tensor([1e-40], dtype=torch.float32) * 1.0).item() == 0.0


class ProcessSettings:
    """Set torch's CPU thread count and denormal flushing for the ``with`` block, and put
    back the values they had before.

    Flushing denormals: gradients fading through hundreds of recurrent steps go denormal,
    and x86 CPUs handle those about 10x slower (measured on an LSTM on an end-scored task).
    """

    def __init__(self, *, num_threads: int | None, flush_denormal: bool):
        self.num_threads, self.flush = num_threads, flush_denormal

    def __enter__(self) -> "ProcessSettings":
        self._threads = torch.get_num_threads()
        self._flushing = flushing_denormals()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        if self.flush:
            torch.set_flush_denormal(True)  # False where the CPU cannot: nothing changes
        return self

    def __exit__(self, *exc) -> bool:
        if torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)
        if flushing_denormals() != self._flushing:
            torch.set_flush_denormal(self._flushing)
        return False


class GracefulInterrupt:
    """Turn the first Ctrl-C (SIGINT) or SIGTERM into a request to stop after the current
    step, so the checkpoint saved then is consistent; a second one interrupts at once.

    SIGTERM is what schedulers (Slurm preemption, Kubernetes) and torchrun send before
    they kill a process, so it gets the same grace as Ctrl-C instead of killing the run
    without a save. ``signal_name`` holds the signal that asked. Handlers are installed
    only in the main thread (Python delivers signals there) and restored on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        logger.warning("%s: stopping after this step and saving a checkpoint (send it again "
                       "to abort at once)", self.signal_name)

    def __enter__(self) -> "GracefulInterrupt":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        return False
