"""One function run in a process of its own while this one goes on: the scoring's model-independent
work (the raw-feature baseline), the test latents' clusterings and the figures run on a second
core, beside the clusterings chosen on validation (the training uses one thread: ``threads: 1``).

A process may start before its arguments exist (:meth:`Background.waiting`): it imports what it
needs (``prepare``) while this one trains, then computes once :meth:`Background.submit` gives
them.

The result is the function's, computed the same way (the same torch thread count): a background
run changes when it is computed, never what. Where the process cannot start or dies, or the
function raises there, :meth:`Background.result` computes it here instead (a real error is then
raised here, with its own type).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading

from lithovae import progress

# not at the top: torch, imported inside the functions that set its threads, loads only in the
# process that runs a task

log = logging.getLogger("lithovae")


def second_core() -> bool:
    """Whether this process may run on more than one CPU: only then is work put in another
    process (a SLURM job given one CPU would share it with that process)."""
    try:
        return len(os.sched_getaffinity(0)) > 1
    except AttributeError:  # no affinity on this platform
        return (os.cpu_count() or 1) > 1


def _ended(signum, frame):
    raise SystemExit(128 + signum)  # unwinds the work: a file it was writing is removed (atomic_write)


def _run(send, arguments, fn, threads: int, prepare) -> None:
    import torch

    signal.signal(signal.SIGTERM, _ended)  # close() ends it so
    torch.set_num_threads(threads)
    try:
        if prepare is not None:
            prepare()
        args = arguments.recv()
        with progress.phases("meanwhile"):  # its progress steps print as "meanwhile: ..."
            result = (True, fn(*args))
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which computes it itself
        result = (False, f"{type(exc).__name__}: {exc}")
    send.send(result)
    send.close()


def _send(connection, args) -> None:
    try:
        connection.send(args)
    except (OSError, ValueError):  # the process ended (or was ended) before it read them
        pass


class Background:
    """``fn(*args)`` started in a spawned process (``fn`` and ``prepare`` module-level functions,
    ``args`` picklable); :meth:`result` waits for it. A daemon: it ends with this process, and
    :meth:`close` ends it early (a run stopped while it works). ``prepare()`` runs there first
    (imports, compilation) and changes no result."""

    def __init__(self, fn, *args, prepare=None):
        self._start(fn, prepare)
        self.submit(*args)

    @classmethod
    def waiting(cls, fn, prepare=None) -> "Background":
        """The process started now, ``fn`` computed once :meth:`submit` gives its arguments."""
        job = cls.__new__(cls)
        job._start(fn, prepare)
        return job

    def _start(self, fn, prepare) -> None:
        import torch

        self.fn, self.args, self.process, self.receive = fn, None, None, None
        self._arguments = self._sender = None
        context = multiprocessing.get_context("spawn")  # a fork would copy torch's thread state
        try:
            self.receive, send = context.Pipe(duplex=False)
            arguments, self._arguments = context.Pipe(duplex=False)
            self.process = context.Process(target=_run, args=(send, arguments, fn, torch.get_num_threads(), prepare),
                                           daemon=True, name=f"lithovae-{fn.__name__}")
            self.process.start()
            send.close()
            arguments.close()
        except (OSError, RuntimeError, ValueError) as exc:  # process limits, an interactive main
            log.debug("%s computed in this process: %s", fn.__name__, exc)
            self.process = None
            self.close()

    def submit(self, *args) -> "Background":
        """Give the process its arguments (once)."""
        if self.args is not None:
            raise RuntimeError(f"{self.fn.__name__} was already given its arguments")
        self.args = args
        if self.process is not None:
            # the arguments (megabytes) go through a pipe the new process reads once it has imported
            # what it needs (seconds): a thread writes them, so this process goes on at once
            self._sender = threading.Thread(target=_send, args=(self._arguments, args), daemon=True)
            self._sender.start()
        return self

    def result(self):
        if self.args is None:
            raise RuntimeError(f"{self.fn.__name__} has no arguments yet: submit them first")
        if self.process is not None:
            try:
                ok, value = self.receive.recv()
                if ok:  # its work is done: no wait for its exit (an interpreter with torch takes seconds)
                    self.process.kill()
                    return value
                log.debug("%s failed in its process (%s): computed here", self.fn.__name__, value)
            except (EOFError, OSError):  # the process died (memory, a signal)
                log.debug("%s: its process died, computed here", self.fn.__name__)
            finally:
                self.close()
        return self.fn(*self.args)

    def close(self) -> None:
        if self.process is not None:
            if self.process.is_alive():
                self.process.terminate()
            self.process.join()
            self.process = None
        if self._sender is not None:  # a write to the ended process fails at once: the thread ends
            self._sender.join()
            self._sender = None
        for connection in (self._arguments, self.receive):
            if connection is not None:
                connection.close()
        self._arguments = self.receive = None


class Here:
    """:class:`Background`'s interface, computed in this process when its result is asked for
    (small inputs: a process would cost more than it saves)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    @classmethod
    def waiting(cls, fn, prepare=None) -> "Here":
        job = cls(fn)
        job.args = None
        return job

    def submit(self, *args) -> "Here":
        if self.args is not None:
            raise RuntimeError(f"{self.fn.__name__} was already given its arguments")
        self.args = args
        return self

    def result(self):
        return self.fn(*self.args)

    def close(self) -> None:
        pass
