"""Feast objects of the fraud use case: entities, feature views and the feature service.

Each aggregation's feature view holds one online value per entity, ``tiles``: the entity's
tiles packed by ``feature_repo.tiles`` (written by the streaming engine, merged at request time
by the transformer). The views are online only: training sets are computed from the raw event
log (``components.dataset``), never from rows materialized at processing time, so the push
source's file source names a directory nothing reads.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Bytes, Int64, String

from feature_repo.aggregations import AGGREGATIONS, EntityAggregation
from feature_repo.model_inputs import FEATURE_SERVICE
from feature_repo.tiles import TILES_FEATURE

TIMESTAMP_FIELD = "event_timestamp"


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
    return Entity(name=agg.entity, join_keys=[agg.join_key], value_type=ValueType.INT64 if agg.key_type == "int" else ValueType.STRING)


def _feature_view(agg: EntityAggregation, offline_dir: Path) -> FeatureView:
    batch = FileSource(
        name=f"{agg.feature_view}_log",
        path=str(offline_dir / f"{agg.feature_view}_tiles" / "*" / "*.parquet"),
        timestamp_field=TIMESTAMP_FIELD,
    )
    push = PushSource(name=f"{agg.feature_view}_push", batch_source=batch)
    return FeatureView(
        name=agg.feature_view,
        entities=[_entity(agg)],
        # No TTL: tiles are evaluated at the request's time, so an idle entity's old tiles simply fall
        # outside every window (a TTL would turn them into a missing entity instead of empty windows).
        ttl=timedelta(0),
        schema=[Field(name=agg.join_key, dtype=Int64 if agg.key_type == "int" else String), Field(name=TILES_FEATURE, dtype=Bytes)],
        source=push,
        online=True,
    )


# Module-level objects for `feast apply` run inside this directory (feature_store.yaml beside it).
_objects = build_definitions(Path(os.environ.get("RTML_OFFLINE_DIR", Path(__file__).parent / "data" / "offline")))
globals().update({o.name: o for o in _objects})
