"""ml-exp runtime: settings, storage and steps for one transformer classification experiment.

One folder per layer, lowest first; a module imports only from its own layer and lower ones
(``tests/test_architecture.py`` reads :data:`LAYERS` and the folders):

- ``core``: the steps' names, the rules for names, the console, the one error a user can fix;
- ``config``: settings.ini + environment -> one typed, validated ``Config`` (and the search space);
- ``storage``: where every file of a run lands (``layout``), the transport (file:// or s3://),
  a run, the store of runs, the run's lease and manifest;
- ``experiment``: what the experiment gives the runtime: its five functions and their ``ctx``;
- ``toolkit``: what the five functions call in one line, and the document and model helpers that
  steps and serving share;
- ``steps`` and ``serving``: one module per step, plain functions of ``ctx`` and the five
  functions; a trained model answering requests;
- ``backends``: where a task of a step runs (``local`` processes, ``sagemaker`` jobs);
- ``pipeline`` and ``deploy``: what ``exp run`` runs, in order; a run's model on an endpoint;
- ``commands``: the thin ``exp`` command line.

``ml_exp.defaults`` (the toolkit's former name) and ``ml_exp.testing`` (helpers for an
experiment's own tests) are the public modules outside the folders.
"""

__version__ = "0.1.0"

# The layers, lowest first; folders on one line share a layer.
LAYERS = (
    ("core",),
    ("config",),
    ("storage",),
    ("experiment",),
    ("toolkit",),
    ("steps", "serving"),
    ("backends",),
    ("pipeline", "deploy"),
    ("commands",),
)
