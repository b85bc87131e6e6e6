"""Entity features for the online store: computed with the training pipeline's own code
(``training.entity``) as of a date, then published under a new version and activated atomically.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from credit_core.bundle import ENTITY_ID
from credit_core.feature_store import FeaturePublisher, rows_from_records
from feature_kernels import FeatureSpec
from training.entity import entity_features, read_table

__all__ = ["entity_snapshot", "publish_entities", "snapshot_rows"]


def _day(when: dt.datetime) -> float:
    """Days since 1970-01-01 (a naive datetime is taken as UTC), as the date columns are read."""
    aware = when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    return aware.timestamp() / 86_400.0


def entity_snapshot(spec: FeatureSpec, folder: Path, as_of: dt.datetime) -> pl.DataFrame:
    """Every entity found in the spec's history tables, with its features as of ``as_of``:
    column ``entity_id`` plus one column per entity input."""
    entity = spec.entity
    if entity is None:
        raise ValueError(f"spec {spec.name!r} has no entity section")
    keys = pl.concat(
        [
            read_table(folder / t.file, [])
            .select(pl.col(t.key).cast(pl.String).alias(ENTITY_ID))
            .collect()
            for t in entity.tables.values()
        ]
    ).unique(maintain_order=True)
    ids = keys.get_column(ENTITY_ID).drop_nulls()
    as_of_day = pl.Series([_day(as_of)] * len(ids), dtype=pl.Float64)
    features = entity_features(ids, as_of_day, entity, folder)
    return pl.concat([ids.to_frame(ENTITY_ID), features], how="horizontal")


def snapshot_rows(
    snapshot: pl.DataFrame, spec: FeatureSpec
) -> Iterator[tuple[str, dict[str, float | str]]]:
    """Store rows of a snapshot (nulls left out: missing at serving)."""
    categorical = {n for n in spec.entity_inputs() if spec.inputs[n].type == "categorical"}
    return rows_from_records(
        snapshot.iter_rows(named=True), id_field=ENTITY_ID, categorical=categorical
    )


def publish_entities(
    spec: FeatureSpec,
    folder: Path,
    store: FeaturePublisher,
    *,
    as_of: dt.datetime,
    ttl_seconds: int | None,
    console: Console,
) -> tuple[str, int]:
    """Compute, publish under a new version, activate. Returns (version, rows)."""
    with console.status("computing entity features"):
        snapshot = entity_snapshot(spec, folder, as_of)
    namespace = spec.store_namespace()
    version = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    with Progress(
        TextColumn("publishing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("publish", total=snapshot.height)
        written = store.publish(
            namespace,
            version,
            snapshot_rows(snapshot, spec),
            ttl_seconds=ttl_seconds,
            on_progress=lambda n: progress.update(task, completed=n),
        )
    store.activate(namespace, version)
    console.log(f"published {written:,} entities to {namespace} version {version} (active)")
    return version, written
