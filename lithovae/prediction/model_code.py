"""The code of every run's MLflow model (MLflow "models from code"): loading the model runs
this file, which names the class; no pickled object is stored or loaded."""

import mlflow

from lithovae.prediction.mlflow_model import LithovaeModel

mlflow.models.set_model(LithovaeModel())
