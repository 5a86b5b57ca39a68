"""The MLflow "model from code" of the logged adapter model: MLflow runs this file when it loads one."""

from mlflow.models import set_model

from flows.tracking.model import AdapterModel

set_model(AdapterModel())
