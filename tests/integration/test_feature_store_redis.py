"""The engine writes to a Feast Redis online store when RTML_REDIS_CONNECTION is set (the Kubernetes setup)."""

from __future__ import annotations

import pytest
import redis

from feature_repo.store import apply_definitions
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
    from streaming.windows import plan_for

    dbs = {"feast": 1, "native": 2}
    clients, stores, writers = _feast_and_native(tmp_path, redis_server, dbs, key_ttl_seconds)
    assert (writers["feast"].kind, writers["native"].kind) == ("feast", "native-redis")

    def rows(agg, ids, t0, scale):
        names = plan_for(agg).names
        return [(i, t0 + i * 0.37, [(i * k * scale) % 50_000 if "_nb_tx_" in n else 0.1 * i * k * scale - 7.5
                                    for k, n in enumerate(names)]) for i in ids]

    t0 = time.time() - 3600 + 0.9999996  # recent (inside the views' TTL); a fraction that rounds up a second
    try:
        for ids, t, scale in [(range(1, 41), t0, 1), (list(range(30, 61)) + [5], t0 + 600, 3)]:  # then overwrites + new
            for writer in writers.values():
                assert writer.write_now({agg.feature_view: rows(agg, ids, t, scale) for agg in AGGREGATIONS}) == 2 * len(ids)
            native, feast = _hashes(clients["native"]), _hashes(clients["feast"])
            assert len(native) == 2 * (60 if scale == 3 else 40)  # one hash per entity key (customer and terminal ids)
            assert native == feast
        for key in native:
            ttl = [clients[name].ttl(key) for name in dbs]
            assert all(0 < s <= key_ttl_seconds for s in ttl) if key_ttl_seconds else ttl == [-1, -1]

        for agg in AGGREGATIONS:
            names = plan_for(agg).names
            ids = [1, 5, 29, 30, 60, 12345]
            got = {name: s.get_online_features(features=[f"{agg.feature_view}:{n}" for n in names],
                                               entity_rows=[{agg.join_key: i} for i in ids]).to_dict() for name, s in stores.items()}
            assert got["native"] == got["feast"]
            newest = {i: v for i, _, v in rows(agg, range(1, 30), t0, 1) + rows(agg, list(range(30, 61)) + [5], t0 + 600, 3)}
            for k, n in enumerate(names):
                for i, value in zip(ids, got["native"][n]):
                    assert value == (pytest.approx(newest[i][k], rel=1e-6, abs=1e-6) if i in newest else None), (n, i)
    finally:
        for writer in writers.values():
            writer.close()


def test_native_writer_raises_an_error_reply_and_keeps_the_pool_usable(tmp_path, redis_server):
    """An error reply in the middle of a batch reaches the caller; the next write works on a clean connection."""
    import time

    from feature_repo.aggregations import AGGREGATIONS
    from streaming.online import OnlineWriter
    from streaming.windows import plan_for

    client = redis.Redis(host="127.0.0.1", port=redis_server.port, db=3)
    client.flushdb()
    store = _redis_store(tmp_path, f"{redis_server.connection},db=3", None)
    writer = OnlineWriter(store)
    agg = AGGREGATIONS[0]
    width = len(plan_for(agg).names)
    t0 = time.time() - 60
    try:
        native = writer.native
        blocked = native.views[agg.feature_view].keys(2) + native.project
        client.set(blocked, b"not a hash")  # HSET on it answers WRONGTYPE
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            writer.write_now({agg.feature_view: [(i, t0, [1.0] * width) for i in (1, 2, 3)]})
        client.delete(blocked)
        assert writer.write_now({agg.feature_view: [(i, t0 + 1, [2.0] * width) for i in (1, 2, 3)]}) == 3
        assert len(_hashes(client)) == 3
    finally:
        writer.close()


def test_native_writer_matches_feast_beyond_the_fast_framing(tmp_path, redis_server):
    """Counts past the framed lookup table (and negative ones), float32 overflow (Feast stores +-inf) and
    int values in float features: the rows that leave the writer's one-call framing still store Feast's bytes."""
    import time

    from feature_repo.aggregations import AGGREGATIONS
    from streaming.windows import plan_for

    clients, _, writers = _feast_and_native(tmp_path, redis_server, {"feast": 4, "native": 5}, None)
    t0 = time.time() - 600
    odd_counts = [16383, 16384, 1 << 40, -1]
    odd_floats = [3, 1e39, -1e39, 3.4e38]  # an int, beyond float32 both ways, just inside it
    try:
        for batch, (count, fval) in enumerate(zip(odd_counts, odd_floats)):
            rows = {agg.feature_view: [(i, t0 + batch, [count if "_nb_tx_" in n else fval for n in plan_for(agg).names])
                                       for i in (1, 2)] for agg in AGGREGATIONS}
            for writer in writers.values():
                writer.write_now(rows)
            assert _hashes(clients["native"]) == _hashes(clients["feast"]), (count, fval)
    finally:
        for writer in writers.values():
            writer.close()


def test_compiled_framing_gives_the_python_framing_bytes(tmp_path, redis_server):
    """The compiled Redis framer against the Python framing it mirrors: the same buffer for every row,
    edge values included, and the same exception where the Python framing hands over to the exact codecs."""
    import random
    import struct

    from feature_repo.aggregations import AGGREGATIONS
    from streaming.compiled import load
    from streaming.online_native import RedisNativeWriter, native_writer
    from streaming.windows import plan_for

    if load("_online_compiled") is None:
        pytest.skip("the compiled Redis framing was not built")

    def outcome(writer, view, rows):
        """The framed bytes, or the kind of error that sends the batch to the exact codecs (or fails it)."""
        try:
            return writer._frame(view, rows, framed=True)
        except struct.error:
            return TypeError  # the Python framing's struct.pack says struct.error where C conversion says TypeError
        except (OverflowError, TypeError, ValueError) as e:
            return type(e)


    for ttl in (None, 3600):
        store = _redis_store(tmp_path / f"ttl{ttl}", redis_server.connection, ttl)
        from streaming.online import OnlineWriter

        specs = {v: e.spec for v, e in OnlineWriter(store, mode="feast").encoders.items()}
        provider = store._get_provider()
        compiled, python = (native_writer(provider, store.config, specs, flag) for flag in (True, False))
        assert isinstance(compiled, RedisNativeWriter) and compiled._framers and not python._framers
        rng = random.Random(7)
        times = [0.0, 1.0, -1.5, 0.5, 1e-7, 5e-07, 2.5e-06, -5e-07, 1522541276.9999996, 1700000000.0000004, 4294967295.999, 2.5e15, -3e15,
                 float(1 << 40) + 0.25]
        counts = [0, 1, 127, 128, 16383, 16384, 1 << 40, -1, 3.0]
        floats = [0.0, -0.0, 1.5, 3, 1e-40, 3.4e38, float("inf"), float("-inf"), float("nan"), 1e300]
        ids = [0, 1, -1, 255, 1 << 31, (1 << 63) - 1, -(1 << 63), 123456789]
        for agg in AGGREGATIONS:
            names = plan_for(agg).names
            for _ in range(300):
                rows = [(rng.choice(ids + [rng.randrange(-1 << 63, 1 << 63)]),
                         rng.choice(times + [rng.uniform(-2e9, 2e9)]),
                         [rng.choice(counts + [rng.randrange(0, 20000)]) if "_nb_tx_" in n else
                          rng.choice(floats + [rng.uniform(-1e6, 1e6)]) for n in names])
                        for _ in range(rng.randrange(1, 6))]
                assert outcome(compiled, agg.feature_view, rows) == outcome(python, agg.feature_view, rows), rows
        view, width = AGGREGATIONS[0].feature_view, len(plan_for(AGGREGATIONS[0]).names)
        for values in ([1.0] * (width - 1), [1.0] * (width + 1)):  # a row that does not fit the view's HSET
            assert outcome(compiled, view, [(1, 1.0, values)]) == outcome(python, view, [(1, 1.0, values)]) == ValueError
        for bad in ("x", None, 1 << 64, "1.5"):
            for field in (0, 1):  # a count, an average
                rows = [(1, 1.0, [bad if k == field else 1 for k in range(width)])]
                got = outcome(compiled, view, rows)
                assert got == outcome(python, view, rows), (bad, field)
                assert bad == 1 << 64 and field == 1 or not isinstance(got, bytes)  # 2**64 is a fine double
