"""Suite-wide test settings: never reach a model hub; keep MLflow and Lightning output out of the tree."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
