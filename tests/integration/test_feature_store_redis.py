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
