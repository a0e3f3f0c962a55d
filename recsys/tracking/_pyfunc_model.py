"""The code file of the logged pyfunc model ("models from code": nothing is pickled).

MLflow runs this file when it loads the model; the recsys package is on the path from the
model's ``code_paths``.
"""

import mlflow.models

from recsys.tracking.serving import python_model

mlflow.models.set_model(python_model())
