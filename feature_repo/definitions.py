"""Feast objects of the fraud use case: entities, sources, feature views and the feature service.

Stream features enter through push sources (the streaming engine pushes them); each push
source is backed by a directory of parquet files, partitioned by event date, that is the
offline log training reads point-in-time correct rows from.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float32, Int64

from feature_repo.aggregations import AGGREGATIONS, EntityAggregation
from feature_repo.model_inputs import FEATURE_SERVICE

TIMESTAMP_FIELD = "event_timestamp"


def _dtype(feature: str):
    return Int64 if "_nb_tx_" in feature else Float32


def build_definitions(offline_dir: Path) -> list:
    """Every Feast object of the repo, with offline logs under ``offline_dir``."""
    objects: list = []
    views = []
    for agg in AGGREGATIONS:
        objects.append(_entity(agg))
        view = _feature_view(agg, offline_dir)
        views.append(view)
        objects += [view.stream_source, view]
    objects.append(FeatureService(name=FEATURE_SERVICE, features=views, description="Inputs of the card-fraud model."))
    return objects


def _entity(agg: EntityAggregation) -> Entity:
    return Entity(name=agg.entity, join_keys=[agg.join_key], value_type=ValueType.INT64)


def _feature_view(agg: EntityAggregation, offline_dir: Path) -> FeatureView:
    batch = FileSource(
        name=f"{agg.feature_view}_log",
        # The log keeps one directory per event date (feature_repo/offline_log.py); the glob reads them all,
        # for both the DuckDB and the dask offline store.
        path=str(offline_dir / agg.feature_view / "*" / "*.parquet"),
        timestamp_field=TIMESTAMP_FIELD,
    )
    push = PushSource(name=f"{agg.feature_view}_push", batch_source=batch)
    return FeatureView(
        name=agg.feature_view,
        entities=[_entity(agg)],
        # A window's value is stale once its longest window has passed without events.
        ttl=agg.horizon + timedelta(days=1),
        schema=[Field(name=agg.join_key, dtype=Int64)] + [Field(name=f, dtype=_dtype(f)) for f in agg.feature_names()],
        source=push,
        online=True,
    )


# Module-level objects for `feast apply` run inside this directory (feature_store.yaml beside it).
_objects = build_definitions(Path(os.environ.get("RTML_OFFLINE_DIR", Path(__file__).parent / "data" / "offline")))
globals().update({o.name: o for o in _objects})
