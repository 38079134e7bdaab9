"""Where a step runs: ``local`` (this machine's processes) or, later, ``sagemaker`` jobs."""
