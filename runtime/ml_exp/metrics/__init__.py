"""Evaluation modules shipped with the runtime (loaded with ``evaluate.load(<path>)``, offline).

``classification.py`` is an ``evaluate.Metric`` script; :data:`CLASSIFICATION` is its absolute
path. Nothing heavy is imported here: the script itself is only imported by ``evaluate``.
"""

from __future__ import annotations

from pathlib import Path

CLASSIFICATION = str(Path(__file__).resolve().with_name("classification.py"))
