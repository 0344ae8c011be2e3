"""MLflow "model from code" entry: logging the network's pyfunc model points MLflow at this file, so
loading the model imports es-l2l's class instead of unpickling one (no code from data)."""

import mlflow.models

from es_l2l.tracking.network_model import NetworkPyfunc

mlflow.models.set_model(NetworkPyfunc())
