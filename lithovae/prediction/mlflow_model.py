"""A run's predictor as an MLflow ``pyfunc`` model.

``mlflow.pyfunc.load_model(uri).predict(frame)`` returns the table of ``lithovae.predict``
for the bins of ``frame`` (columns ``borehole_id``, ``depth_m`` and the run's features, in
original units). The model's only artifact is the run's predictor bundle; its code is this
package, which must be installed where the model is loaded (``mlflow models serve
--env-manager local``).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

MODEL_NAME = "model"  # runs:/<run id>/model


class LithovaeModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from lithovae.prediction.predictor import Predictor

        self.predictor = Predictor(context.artifacts["predictor"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.predictor.predict(model_input, where="model input")


def example_bins(predictor, n: int = 4) -> pd.DataFrame:
    """Bins spread over the training range of every feature (what the signature is inferred from)."""
    low = np.nan_to_num(predictor.range_low)
    high = np.nan_to_num(predictor.range_high)
    frame = pd.DataFrame({"borehole_id": ["example"] * n, "depth_m": 0.2 * np.arange(n, dtype=np.float64)})
    for j, feature in enumerate(predictor.features):
        frame[feature] = np.linspace(low[j], high[j], n)
    return frame


@contextlib.contextmanager
def _active_run(tracking_uri: str, run_id: str):
    """The training run as MLflow's active run on its store (what log_model attaches to), the
    global tracking URI restored afterwards; the run's status is left to its owner."""
    from lithovae.tracking import global_uri

    with global_uri(tracking_uri), mlflow.start_run(run_id=run_id):
        yield


def log_model(logger, bundle: Path, register_as: str | None = None):
    """Log ``bundle`` as the run's pyfunc model (``runs:/<run id>/model``), with an input and
    output signature; ``register_as``: also a new version of that registered model."""
    from lithovae import __version__
    from lithovae.prediction.predictor import Predictor

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in run logs
    predictor = Predictor(bundle)
    example = example_bins(predictor)
    client = logger.experiment
    status = client.get_run(logger.run_id).info.status
    with warnings.catch_warnings():
        # MLflow's hints: integer output columns (never missing here) and no input example
        # (the signature is given, so none is needed)
        warnings.filterwarnings("ignore", message=".*[Ii]nteger column", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        signature = mlflow.models.infer_signature(example, predictor.predict(example))
        with _active_run(logger._tracking_uri, logger.run_id):
            info = mlflow.pyfunc.log_model(
                # models from code: the model is this package's class, named in a file, never pickled
                name=MODEL_NAME, python_model=str(Path(__file__).with_name("model_code.py")),
                artifacts={"predictor": str(bundle)},
                signature=signature, pip_requirements=[f"lithovae=={__version__}"],
                registered_model_name=register_as, await_registration_for=60)
    if status == "RUNNING":  # leaving the active run ended it: the training run ends it itself
        client.update_run(logger.run_id, status="RUNNING")
    return info
