"""Reconciliation with ``DATA_FROM``: another run's reconciled records and split, reused.

The records are copied byte for byte (so the data fingerprint is the source's, checked), and
the source's split (``data/split.parquet``) lands in this run as ``data/assigned_split.parquet``,
where preparation puts every record in the split it had: both runs then test on the very same
documents, and their test-split fingerprints are equal. ``reconcile`` is not called. The run
keeps its own copy, so it stays whole if the source run is deleted.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from ml_exp.core.errors import StepError
from ml_exp.core.names import PREPARATION, RECONCILIATION
from ml_exp.experiment.context import Context
from ml_exp.storage.layout import ASSIGNED_SPLIT, RECONCILED, SPLIT
from ml_exp.storage.sources import checked_source

# What reconciliation recorded that stays true of the copy.
KEPT = ("records", "records_read", "counts", "fields", "shards", "fingerprint", "labels_with_too_few_records")


def reuse_data(ctx: Context) -> dict[str, Any]:
    """Copy DATA_FROM's reconciled records and split into this run; the facts for the manifest."""
    config = ctx.config
    source, manifest = checked_source(config.data_from, config.storage_uri)
    recorded = manifest["steps"][RECONCILIATION]
    with tempfile.TemporaryDirectory(prefix="ml-exp-data-from-", dir=ctx.run.scratch_area()) as scratch:
        local = Path(scratch) / "reconciled"
        source.get_dir(RECONCILED, str(local))
        digest = hashlib.sha256()
        for shard in sorted(local.glob("part-*.parquet")):
            digest.update(shard.read_bytes())
        if recorded.get("fingerprint") and digest.hexdigest() != recorded["fingerprint"]:
            raise StepError(
                f"DATA_FROM={config.data_from!r}: the records in {source.path(RECONCILED)} are not those its "
                "manifest's fingerprint names (changed after they were written); name another run."
            )
        rewriting = ctx.run.step(RECONCILIATION).get("attempt", 1) > 1
        ctx.run.put_dir(str(local), RECONCILED, overwrite=rewriting)
        ctx.run.write_bytes(ASSIGNED_SPLIT, source.read_bytes(SPLIT), overwrite=rewriting)
    ctx.log.info("reconciliation: %d records and their split reused from %s", recorded.get("records", 0), source.uri)
    prepared = manifest["steps"].get(PREPARATION) or {}
    return {
        **{key: recorded[key] for key in KEPT if key in recorded},
        "data_from": {
            "experiment": source.experiment_name,
            "run": source.num,
            "uri": source.uri,
            "split_fingerprints": prepared.get("split_fingerprints"),
        },
    }
