"""One function run in a process of its own while this one goes on: the scoring's model-independent
work (the raw-feature baseline) and the UMAP of the figures run on a second core, beside the
latent clusterings and the other figures (the training uses one thread: ``threads: 1``).

The result is the function's, computed the same way (the same torch thread count): a background
run changes when it is computed, never what. Where the process cannot start or dies, or the
function raises there, :meth:`Background.result` computes it here instead (a real error is then
raised here, with its own type).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading

# not at the top: torch, imported inside the functions that set its threads, loads only in the
# process that runs a task

log = logging.getLogger("lithovae")


def _run(send, arguments, fn, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        args = arguments.recv()
        result = (True, fn(*args))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which computes it itself
        result = (False, f"{type(exc).__name__}: {exc}")
    send.send(result)
    send.close()


EXIT_WAIT_S = 10.0  # for a process that has sent its result to exit by itself (then it is ended)


def _send(connection, args) -> None:
    try:
        connection.send(args)
    except (OSError, ValueError):  # the process ended (or was ended) before it read them
        pass


class Background:
    """``fn(*args)`` started in a spawned process (``fn`` a module-level function, ``args``
    picklable); :meth:`result` waits for it. A daemon: it ends with this process, and
    :meth:`close` ends it early (a run stopped while it works)."""

    def __init__(self, fn, *args):
        import torch

        self.fn, self.args, self.process, self.receive = fn, args, None, None
        self._arguments = self._sender = None
        context = multiprocessing.get_context("spawn")  # a fork would copy torch's thread state
        try:
            self.receive, send = context.Pipe(duplex=False)
            arguments, self._arguments = context.Pipe(duplex=False)
            self.process = context.Process(target=_run, args=(send, arguments, fn, torch.get_num_threads()),
                                           daemon=True, name=f"lithovae-{fn.__name__}")
            self.process.start()
            send.close()
            arguments.close()
            # the arguments (megabytes) go through a pipe the new process reads once it has imported
            # what it needs (seconds): a thread writes them, so this process goes on at once
            self._sender = threading.Thread(target=_send, args=(self._arguments, args), daemon=True)
            self._sender.start()
        except (OSError, RuntimeError, ValueError) as exc:  # process limits, an interactive main
            log.debug("%s computed in this process: %s", fn.__name__, exc)
            self.process = None
            self.close()

    def result(self):
        if self.process is not None:
            try:
                ok, value = self.receive.recv()
                self.process.join(timeout=EXIT_WAIT_S)  # it exits once it has sent its result
                if ok:
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

    def result(self):
        return self.fn(*self.args)

    def close(self) -> None:
        pass
