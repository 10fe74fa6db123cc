"""A run's predictor as an MLflow ``pyfunc`` model.

``mlflow.pyfunc.load_model(uri).predict(frame)`` returns the table of ``lithovae.predict``
for the bins of ``frame`` (columns ``borehole_id``, ``depth_m`` and the run's features, in
original units). The model holds everything it needs to be served elsewhere: the run's
predictor bundle (its only artifact), a few of the run's test bins as its input example, this
package's code (``code/lithovae``, put on ``sys.path`` when the model loads) and a
``requirements.txt`` of the registry packages that code imports when it loads and predicts.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.metadata
import json
import logging
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE, RESOURCE_EXHAUSTED

from lithovae.cli import one_line
from lithovae.errors import LithovaeError

# not at the top: the serving path (predictor, rows: torch) and the writer's helpers are imported
# where each call needs them, so MLflow importing this module to load a model loads no more

MODEL_NAME = "model"  # runs:/<run id>/model
# the registry packages the serving path (load_context and predict, below) imports, each pinned to
# this environment's version: torch, numpy, pandas (predictor), hydra-core and omegaconf (the
# model built from its saved config, lithovae.config, lithovae.untrusted), pyarrow
# (lithovae.data.builder, via prediction.rows), PyYAML (lithovae.data.labels), scikit-learn and
# scipy (lithovae.evaluation, and the VaDE and contrastive models), mlflow-skinny (pyfunc and
# `mlflow models serve`); not Lightning (tests/test_predict.py loads the model with it blocked)
SERVING_PACKAGES = ("mlflow-skinny", "torch", "numpy", "pandas", "pyarrow", "hydra-core", "omegaconf",
                    "PyYAML", "scikit-learn", "scipy")
log = logging.getLogger("lithovae")


class RequestError(MlflowException):
    """A request the model cannot answer, as one line: the scoring server answers it with HTTP
    400 (500 for ``INTERNAL_ERROR``) and this message, and no stack trace."""

    def __init__(self, message: str, error_code=INVALID_PARAMETER_VALUE):
        super().__init__(message, error_code=error_code)

    # the scoring server rewrites the message of an MlflowException raised by predict to
    # "Failed to predict data '<the whole request as text>'. Error: ..." (many lines, and a
    # large request echoed back): the first message set, ours, is the one kept
    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value


class LithovaeModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from lithovae.prediction.predictor import Predictor

        self.predictor = Predictor(context.artifacts["predictor"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """The table of ``lithovae.predict`` for the bins of ``model_input``, computed in chunks of
        rows, with every missing or non-finite value as None (JSON null). Bad input raises a
        one-line :class:`RequestError` (HTTP 400 when served)."""
        from lithovae.prediction.rows import json_safe, predict_rows

        try:
            return json_safe(predict_rows(self.predictor, model_input, where="model input"))
        except LithovaeError as exc:
            raise RequestError(one_line(exc)) from None
        except MemoryError:
            raise RequestError("model input: out of memory: send fewer rows per request",
                               error_code=RESOURCE_EXHAUSTED) from None
        except Exception as exc:  # noqa: BLE001 - a bug: its traceback goes to the server's log, not the client
            log.exception("lithovae model: prediction failed")
            raise RequestError(f"internal error: {one_line(exc)[:200]}", error_code=INTERNAL_ERROR) from None
        finally:
            _TRIMMER.answered()


class _Trimmer:
    """Gives the heap freed by a request back to the system once the server is idle (5 to 80 s
    after the last answer): MLflow's scoring server turns the answer into JSON after
    predict returns (for as long as the answer is large), and glibc keeps what that freed (a served 100 000-row request left the
    worker ~0.3 GB larger for good; trimmed, it returns to within ~0.1 GB of idle)."""

    AFTER_S = (5.0, 10.0, 20.0, 40.0, 80.0)
    POLL_S = 2.5

    def __init__(self):
        self.lock = threading.Lock()
        self.last: float | None = None
        self.done = 0
        self.thread: threading.Thread | None = None

    def answered(self) -> None:
        with self.lock:
            self.last, self.done = time.monotonic(), 0
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="lithovae-trim", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.POLL_S)
            with self.lock:
                due = self.done < len(self.AFTER_S) and time.monotonic() - self.last >= self.AFTER_S[self.done]
                self.done += due
            if due:
                _trim()


def _trim() -> None:

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


_TRIMMER = _Trimmer()


def serving_requirements() -> list[str]:
    """``SERVING_PACKAGES`` as ``name==version`` lines, the installed version without a local
    label (``2.13.0+cpu`` is ``2.13.0``, which the registry has)."""
    from packaging.version import Version

    return [f"{name}=={Version(importlib.metadata.version(name)).public}" for name in SERVING_PACKAGES]


def input_example(bundle: Path) -> pd.DataFrame:
    """The bundle's ``example.json`` (a few of the run's test bins, written with the bundle just
    before the model is logged) as a frame: ``borehole_id`` text, every other column float."""
    from lithovae.prediction.bundle import EXAMPLE_FILE

    state = json.loads((bundle / EXAMPLE_FILE).read_text())
    frame = pd.DataFrame(state["data"], columns=state["columns"])
    return frame.astype({c: str if c == "borehole_id" else np.float64 for c in frame.columns})


def _signature(example: pd.DataFrame, output: pd.DataFrame):
    """The input columns and their types, each optional, and the output table. Optional: MLflow
    checks a required column before the model runs and answers a missing one with the whole
    request echoed back in its message; the model names the missing column in one line."""
    from mlflow.types.schema import ColSpec, Schema

    signature = mlflow.models.infer_signature(example, output)
    signature.inputs = Schema([ColSpec(c.type, c.name, required=False) for c in signature.inputs.inputs])
    return signature


@contextlib.contextmanager
def _active_run(tracking_uri: str, run_id: str):
    """The training run as MLflow's active run on its store (what log_model attaches to), the
    global tracking URI restored afterwards; the run's status is left to its owner."""
    from lithovae.tracking import global_uri

    with global_uri(tracking_uri), mlflow.start_run(run_id=run_id):
        yield


@contextlib.contextmanager
def _no_requirement_scan():
    """MLflow's check that the current environment satisfies the model's requirements, skipped
    (when it saves the model and when it loads it to check the input example): they are
    :func:`serving_requirements`, read from this environment, and the check maps every installed
    file to its package first (``packages_distributions``: ~1.8 s, half of logging the model).
    Where another MLflow version has no such check, nothing is skipped."""
    from mlflow.utils import environment

    name = "warn_dependency_requirement_mismatches"
    modules = [m for m in (environment, mlflow.pyfunc) if callable(getattr(m, name, None))]
    checks = [getattr(m, name) for m in modules]
    for module in modules:
        setattr(module, name, lambda requirements: None)
    try:
        yield
    finally:
        for module, check in zip(modules, checks):
            setattr(module, name, check)


def log_model(logger, bundle: Path, register_as: str | None = None):
    """Log ``bundle`` as the run's pyfunc model (``runs:/<run id>/model``), with its input example,
    an input and output signature, this package's code and its serving requirements;
    ``register_as``: also a new version of that registered model."""
    from lithovae.prediction.predictor import Predictor
    from lithovae.prediction.rows import predict_rows

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in run logs
    predictor = Predictor(bundle)
    example = input_example(bundle)
    client = logger.experiment
    status = client.get_run(logger.run_id).info.status
    path = list(sys.path)
    try:
        with warnings.catch_warnings():
            # MLflow's hint about integer output columns (never missing here), and pandas 3's
            # deprecation of a comparison MLflow makes when it saves the input example
            warnings.filterwarnings("ignore", message=".*[Ii]nteger column", category=UserWarning)
            warnings.filterwarnings("ignore", message="Operation with range is deprecated")
            signature = _signature(example, predict_rows(predictor, example))
            with _active_run(logger.experiment.tracking_uri, logger.run_id), _no_requirement_scan():
                info = mlflow.pyfunc.log_model(
                    # models from code: the model is this package's class, named in a file, never pickled
                    name=MODEL_NAME, python_model=str(Path(__file__).with_name("model_code.py")),
                    artifacts={"predictor": str(bundle)}, code_paths=[str(Path(__file__).parents[1])],
                    signature=signature, input_example=example, pip_requirements=serving_requirements(),
                    registered_model_name=register_as, await_registration_for=60)
    finally:
        # MLflow serves the example once to check it, with the model's copy of the code first on
        # sys.path: this process goes on with its own
        sys.path[:] = path
    if status == "RUNNING":  # leaving the active run ended it: the training run ends it itself
        client.update_run(logger.run_id, status="RUNNING")
    return info
