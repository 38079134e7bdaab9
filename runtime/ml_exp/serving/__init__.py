"""Serving a run's model: the bundle (a run's model and what predicting needs), the predictor
(shared by ``exp predict``, ``exp serve`` and SageMaker endpoints) and the HTTP server that
speaks SageMaker's serving contract. Nothing heavy is imported here."""
