"""The processing topology: which topics the engine consumes and what each one feeds.

A windowed aggregation must see every event of an entity in one process. Kafka keeps a key's
events in one partition, so an aggregation reads a source directly when the source is keyed by
the aggregation's join key (customer windows from ``transactions``, keyed by customer_id;
terminal labels from ``fraud-labels``, keyed by terminal_id). Otherwise the engine re-keys the
source's accepted events into a repartition topic ``rtml-<source>-by-<join key>`` (as Kafka
Streams does) and the aggregation reads that instead.

Every topic one aggregation reads is co-partitioned (same partition count, keyed by the join
key with Kafka's default partitioner) and the engine's consumer uses the range assignor, which
gives partition p of each such topic to the same group member: an entity's whole state lives
in one process, and a rebalance moves it as a unit (see ``streaming.restore``).

With ``repartition`` off, every aggregation reads its sources directly: one hop less per event,
but then a single process must own every partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from feature_repo.aggregations import EntityAggregation
from feature_repo.sources import EventSource
from rtml_common.errors import ConfigurationError
from rtml_common.kafka import dlq_topic, ensure_topics
from rtml_common.settings import KafkaSettings


@dataclass(frozen=True)
class Forward:
    """Re-key a stream's accepted events into ``topic`` by the value of ``key_field``."""

    topic: str
    key_field: str


@dataclass(frozen=True)
class Stream:
    """One consumed topic: its schema, the aggregations it feeds and what else happens to its events.

    ``name`` is the engine's name for it (the source name, or ``<source>@<join key>`` for a
    repartition topic). Only a source topic logs raw events and admits or dead-letters them
    (``streaming.admission``): a repartition topic carries events that were already accepted.
    """

    name: str
    topic: str
    source: EventSource
    views: tuple[str, ...]
    is_source: bool
    forwards: tuple[Forward, ...] = ()

    @property
    def stateful(self) -> bool:
        return bool(self.views)


def repartition_topic_name(source: EventSource, join_key: str) -> str:
    return f"rtml-{source.name}-by-{join_key}"


def build_topology(sources: Iterable[EventSource], aggregations: Iterable[EntityAggregation],
                   topic: Callable[[str], str] = lambda t: t, repartition: bool = True) -> dict[str, Stream]:
    """The streams of this feature repo, by consumed topic (``topic`` adds the deployment's prefix)."""
    sources = list(sources)
    aggregations = list(aggregations)
    streams: dict[str, Stream] = {}
    for src in sources:
        direct: list[str] = []
        rekeyed: dict[str, list[str]] = {}
        for agg in aggregations:
            if not any(inp.source == src.name for inp in agg.inputs):
                continue
            if not repartition or src.key_field == agg.join_key:
                direct.append(agg.feature_view)
            else:
                rekeyed.setdefault(agg.join_key, []).append(agg.feature_view)
        forwards = []
        for join_key, views in rekeyed.items():
            if join_key not in {f.name for f in src.fields}:
                raise ConfigurationError(f"source '{src.name}' feeds {views} keyed by '{join_key}', a field it lacks")
            rt = topic(repartition_topic_name(src, join_key))
            forwards.append(Forward(rt, join_key))
            streams[rt] = Stream(f"{src.name}@{join_key}", rt, src, tuple(views), is_source=False)
        t = topic(src.topic)
        streams[t] = Stream(src.name, t, src, tuple(direct), is_source=True, forwards=tuple(forwards))
    return streams


def copartitioned_groups(streams: dict[str, Stream]) -> dict[str, list[str]]:
    """Topics that must be co-partitioned, by aggregation (feature view)."""
    groups: dict[str, list[str]] = {}
    for s in streams.values():
        for view in s.views:
            groups.setdefault(view, []).append(s.topic)
    return groups


def repartition_partitions(streams: dict[str, Stream], counts: dict[str, int], default: int) -> dict[str, int]:
    """Partition count each repartition topic must be created with: that of the source topics it
    is joined with (so the range assignor co-locates them), else ``default``."""
    out: dict[str, int] = {}
    groups = copartitioned_groups(streams)
    for s in streams.values():
        if s.is_source:
            continue
        peers = {counts[t] for view in s.views for t in groups[view] if streams[t].is_source and t in counts}
        if len(peers) > 1:
            raise ConfigurationError(f"topics joined with {s.topic} have different partition counts: {sorted(peers)}")
        out[s.topic] = peers.pop() if peers else default
    return out


def check_copartitioned(streams: dict[str, Stream], counts: dict[str, int]) -> None:
    """Raise when the topics one aggregation reads differ in partition count."""
    for view, topics in copartitioned_groups(streams).items():
        found = {t: counts.get(t) for t in topics}
        if len(set(found.values())) > 1:
            raise ConfigurationError(
                f"aggregation '{view}' reads topics with different partition counts {found}: they must be "
                "co-partitioned (same count, same key) so one process holds each entity's whole state")


def create_topics(settings: KafkaSettings, streams: dict[str, Stream], partitions: int) -> dict[str, int]:
    """Create the missing topics of ``streams`` and return every topic's partition count.

    Source topics and their dead-letter topics get ``partitions``; a repartition topic gets the
    count of the source topics it is joined with (``repartition_partitions``). Topics that exist
    keep theirs, so the co-partitioning is checked last.
    """
    sources = [t for t, s in streams.items() if s.is_source]
    counts = ensure_topics(settings, sources + [dlq_topic(t) for t in sources], partitions=partitions)
    for topic, n in repartition_partitions(streams, counts, partitions).items():
        counts.update(ensure_topics(settings, [topic], partitions=n))
    check_copartitioned(streams, counts)
    return counts
