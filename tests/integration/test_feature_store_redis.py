"""The engine writes to a Feast Redis online store when RTML_REDIS_CONNECTION is set (the Kubernetes setup)."""

from __future__ import annotations

import pytest
import redis

from feature_repo.store import apply_definitions
from feature_repo.tiles import TILES_FEATURE
from rtml.simulator import generate_transactions, produce_events, to_events
from streaming.runner import StreamRunner
from streaming.settings import StreamingSettings
from tests.integration.test_streaming_engine import assert_converged

pytestmark = pytest.mark.integration


def test_engine_converges_in_redis_online_store(tmp_path, kafka_broker, redis_server, unique):
    data = generate_transactions(n_customers=60, n_terminals=120, n_days=40, start_date="2018-05-01", radius=15.0, seed=21)
    for col in ("CUSTOMER_ID", "TERMINAL_ID", "TRANSACTION_ID"):
        data[col] = data[col] + 30_000_000  # entities no other test on the shared broker uses
    settings = StreamingSettings(home=tmp_path, kafka_bootstrap=kafka_broker.bootstrap, group_id=f"redis-{unique}", topic_prefix=f"{unique}-",
                                 metrics_port=0, offline_flush_s=0.5, redis_connection=redis_server.connection)
    assert settings.repo_config().online_store.type == "redis"
    store = apply_definitions(settings)
    produce_events(settings, to_events(data))
    StreamRunner(settings, store=store).run(idle_timeout_s=3, max_seconds=240)
    assert_converged(store, data)
    # The values really live in Redis: one hash per entity key.
    assert redis.Redis(host="127.0.0.1", port=redis_server.port).dbsize() >= data["CUSTOMER_ID"].nunique()


def _redis_store(home, connection: str, key_ttl_seconds: int | None):
    """A Feast Redis store of the repo's objects, with Feast's optional key TTL set."""
    from feast import FeatureStore

    from feature_repo.definitions import build_definitions
    from feature_repo.store import FeatureStoreSettings

    settings = FeatureStoreSettings(home=home, redis_connection=connection)
    config = settings.repo_config()
    config.online_store.key_ttl_seconds = key_ttl_seconds
    settings.offline_path.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(config=config)
    store.apply(build_definitions(settings.offline_path))
    return store


def _feast_and_native(tmp_path, redis_server, dbs: dict[str, int], key_ttl_seconds: int | None):
    """Clients, stores and writers of Feast's own writer and the native one, each on an empty Redis database."""
    from streaming.online import OnlineWriter

    clients = {name: redis.Redis(host="127.0.0.1", port=redis_server.port, db=db) for name, db in dbs.items()}
    for client in clients.values():
        client.flushdb()
    stores = {name: _redis_store(tmp_path / name, f"{redis_server.connection},db={db}", key_ttl_seconds) for name, db in dbs.items()}
    writers = {"feast": OnlineWriter(stores["feast"], mode="feast"), "native": OnlineWriter(stores["native"])}
    return clients, stores, writers


def _hashes(client: redis.Redis) -> dict:
    return {key: client.hgetall(key) for key in client.scan_iter(count=1000)}


@pytest.mark.parametrize("key_ttl_seconds", [None, 86_400])
def test_native_writer_stores_feast_bytes_in_redis(tmp_path, redis_server, key_ttl_seconds):
    """Raw hashes written natively equal those Feast's own online_write_batch writes; Feast reads them back."""
    import time

    from feature_repo.aggregations import AGGREGATIONS
    from tests.unit.streaming.reference import engine_rows
    from tests.unit.streaming.test_online_native import random_rows

    dbs = {"feast": 1, "native": 2}
    clients, stores, writers = _feast_and_native(tmp_path, redis_server, dbs, key_ttl_seconds)
    assert (writers["feast"].kind, writers["native"].kind) == ("feast", "native-redis")
    t0 = time.time() - 3600 + 0.9999996  # a fraction that rounds up a second
    first = engine_rows(t0)  # real packed tiles: 40 customers, 37 terminals
    second = {agg.feature_view: random_rows(list(range(30, 61)) + [5], t0 + 600, k) for k, agg in enumerate(AGGREGATIONS)}
    try:
        for batch, keys in ((first, 77), (second, 2 * 60)):  # then overwrites + new entities
            for writer in writers.values():
                assert writer.write_now(batch) == sum(len(rows) for rows in batch.values())
            native, feast = _hashes(clients["native"]), _hashes(clients["feast"])
            assert len(native) == keys  # one hash per entity key (customer and terminal ids)
            assert native == feast
        for key in native:
            ttl = [clients[name].ttl(key) for name in dbs]
            assert all(0 < s <= key_ttl_seconds for s in ttl) if key_ttl_seconds else ttl == [-1, -1]

        for agg in AGGREGATIONS:
            ids = [1, 5, 29, 30, 36, 60, 12345]
            got = {name: s.get_online_features(features=[f"{agg.feature_view}:{TILES_FEATURE}"], entity_rows=[{agg.join_key: i} for i in ids],
                                               full_feature_names=True).to_dict()[f"{agg.feature_view}__{TILES_FEATURE}"]
                   for name, s in stores.items()}
            assert got["native"] == got["feast"]
            newest = {i: v[0] for batch in (first, second) for i, _, v in batch[agg.feature_view]}
            assert got["native"] == [newest.get(i) for i in ids]  # 12345: never written
    finally:
        for writer in writers.values():
            writer.close()


def test_native_writer_raises_an_error_reply_and_keeps_the_pool_usable(tmp_path, redis_server):
    """An error reply in the middle of a batch reaches the caller; the next write works on a clean connection."""
    import time

    from feature_repo.aggregations import AGGREGATIONS
    from streaming.online import OnlineWriter

    client = redis.Redis(host="127.0.0.1", port=redis_server.port, db=3)
    client.flushdb()
    store = _redis_store(tmp_path, f"{redis_server.connection},db=3", None)
    writer = OnlineWriter(store)
    agg = AGGREGATIONS[0]
    t0 = time.time() - 60
    try:
        native = writer.native
        blocked = native.views[agg.feature_view].keys(2) + native.project
        client.set(blocked, b"not a hash")  # HSET on it answers WRONGTYPE
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            writer.write_now({agg.feature_view: [(i, t0, [b"tiles"]) for i in (1, 2, 3)]})
        client.delete(blocked)
        assert writer.write_now({agg.feature_view: [(i, t0 + 1, [b"tiles 2"]) for i in (1, 2, 3)]}) == 3
        assert len(_hashes(client)) == 3
    finally:
        writer.close()


def test_native_writer_matches_feast_on_every_length_and_fails_bad_values_before_sending(tmp_path, redis_server):
    """Values whose length prefixes (protobuf varint, RESP decimal) change size, the empty one included, store
    Feast's bytes; a value Feast cannot write (not bytes, or a row of the wrong width) fails the batch unsent."""
    import time

    from feature_repo.aggregations import AGGREGATIONS
    from tests.unit.streaming.test_online_native import LENGTHS

    clients, _, writers = _feast_and_native(tmp_path, redis_server, {"feast": 4, "native": 5}, None)
    t0 = time.time() - 600
    try:
        for batch, n in enumerate(LENGTHS):
            rows = {agg.feature_view: [(i, t0 + batch, [bytes([i]) * n]) for i in (1, 2)] for agg in AGGREGATIONS}
            for writer in writers.values():
                writer.write_now(rows)
            assert _hashes(clients["native"]) == _hashes(clients["feast"]), n
        before = _hashes(clients["native"])
        view = AGGREGATIONS[0].feature_view
        for bad, error in ((["text"], TypeError), ([b"a", b"b"], ValueError)):
            with pytest.raises(error):
                writers["native"].write_now({view: [(3, t0 + 100, [b"fine"]), (1, t0 + 100, bad)]})
        assert _hashes(clients["native"]) == before
        with pytest.raises(TypeError):  # Feast's own writer refuses the same value
            writers["feast"].write_now({view: [(1, t0 + 100, ["text"])]})
    finally:
        for writer in writers.values():
            writer.close()
