"""ml-exp runtime: settings, storage and steps for one transformer classification experiment.

Layers, each importing only from its own and lower ones (``tests/test_architecture.py``):

1. ``names``, ``parsers``: the steps and the rules for names (pure, standard library);
2. ``config``: settings.ini + environment -> one typed, validated ``Config``;
3. ``layout`` (every path inside a run), ``store`` (runs on file:// or s3://), ``context`` (``ctx``), ...;
4. ``steps``: one module per step, plain functions of ``ctx`` and the experiment's five functions;
5. ``backends``: where a step runs (``local`` processes, ``sagemaker`` jobs), one ``Backend`` each;
6. ``pipeline``: what ``exp run`` runs, in order, on the backend of ``BACKEND``;
7. ``cli``: the thin ``exp`` command line.
"""

__version__ = "0.1.0"
