"""Assembling the model input: windows evaluated at the request time, the scored transaction once, missing entities, datetimes."""

from __future__ import annotations

import struct
from datetime import datetime, timezone

import numpy as np
import pytest

from feature_repo.aggregations import AGGREGATIONS, CUSTOMER_SPENDING
from feature_repo.model_inputs import MODEL_INPUTS, calendar_features
from feature_repo.tiles import layout_for
from inference import metrics
from inference.assembly import assemble, epoch_seconds
from inference.settings import TransformerSettings
from inference.tensors import BadRequest
from inference.transformer import FraudTransformer
from rtml_common.errors import InvalidInputError, RtmlError
from tests.integration.inference_fixtures import US, reference_vectors, tiles_from_events

SAT_NIGHT = int(datetime(2024, 5, 4, 3, 0, tzinfo=timezone.utc).timestamp())  # Saturday 03:00 UTC, on a tile boundary
MON_NOON = int(datetime(2024, 5, 6, 12, 0, tzinfo=timezone.utc).timestamp())
HOUR, DAY = 3600, 86400


def make_events(seed: int = 3, n: int = 600) -> list[dict]:
    """Events of customers 1-2 and terminals 10-11 over the 45 days before MON_NOON and one day after it
    (after a request time: outside every window), some exactly on tile boundaries."""
    rng = np.random.default_rng(seed)
    t = MON_NOON * US + rng.integers(-45 * DAY * US, DAY * US, n)
    edge = rng.random(n) < 0.1
    t[edge] = t[edge] // (HOUR * US) * (HOUR * US)
    return [{"customer_id": int(c), "terminal_id": int(k), "t_us": int(ts), "tx_amount": float(a), "fraud": bool(f)}
            for c, k, ts, a, f in zip(rng.integers(1, 3, n), rng.integers(10, 12, n), t, np.round(rng.gamma(2.0, 30.0, n), 2),
                                      rng.random(n) < 0.15)]


def blobs_for(events: list[dict], requests: list[tuple]) -> np.ndarray:
    """The tile column of each request row (AGGREGATIONS order), None where the entity has no events."""
    by_agg = [tiles_from_events(agg, events) for agg in AGGREGATIONS]
    keys = [{"customer_id": r[0], "terminal_id": r[1]} for r in requests]
    out = np.empty((len(requests), len(AGGREGATIONS)), dtype=object)
    for j, agg in enumerate(AGGREGATIONS):
        out[:, j] = [by_agg[j].get(k[agg.join_key]) for k in keys]
    return out


def run(requests: list[tuple], tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cols = {"customer_id": np.array([r[0] for r in requests]), "terminal_id": np.array([r[1] for r in requests]),
            "tx_amount": np.array([r[2] for r in requests], dtype=np.float32)}
    return assemble(cols, np.array([r[3] for r in requests], dtype=np.int64), tiles)


REQUESTS = [(1, 10, 30.0, MON_NOON), (2, 11, 12.5, SAT_NIGHT), (1, 11, 400.0, MON_NOON - 20 * DAY + 1799),
            (2, 10, 3.25, MON_NOON - 3 * DAY - 1), (1, 10, 7.0, MON_NOON + 2 * DAY)]


def test_windows_are_evaluated_at_each_request_time_in_model_inputs_order():
    events = make_events()
    x, missing = run(REQUESTS, blobs_for(events, REQUESTS))
    assert x.dtype == np.float32 and x.shape == (len(REQUESTS), len(MODEL_INPUTS)) and not missing.any()
    np.testing.assert_allclose(x, reference_vectors(events, REQUESTS), rtol=1e-6)
    row = dict(zip(MODEL_INPUTS, x[1].tolist()))
    assert row["tx_amount"] == 12.5 and row["tx_during_weekend"] == 1.0 and row["tx_during_night"] == 1.0
    assert all(v > 0 for k, v in row.items() if "_nb_tx_" in k), "the fixture exercises non-empty windows"


@pytest.mark.parametrize("epoch", [MON_NOON, MON_NOON + 1, MON_NOON + HOUR - 1, SAT_NIGHT + 1234])
def test_the_scored_transaction_counts_once_whether_or_not_the_engine_has_ingested_it(epoch):
    history = make_events(seed=5)
    scored = {"customer_id": 1, "terminal_id": 10, "t_us": epoch * US, "tx_amount": 55.5, "fraud": True}
    request = [(1, 10, 55.5, epoch)]
    before, _ = run(request, blobs_for(history, request))
    after, _ = run(request, blobs_for(history + [scored], request))  # its own tile (and a label) already written
    np.testing.assert_array_equal(before, after)
    # Once, not zero times: the delay-0 windows hold the history in them plus this transaction.
    np.testing.assert_allclose(before, reference_vectors(history, request), rtol=1e-6)
    end = epoch * US // (HOUR * US) * (HOUR * US)
    in_day = sum(1 for e in history if e["customer_id"] == 1 and end - DAY * US <= e["t_us"] < end)
    assert before[0, MODEL_INPUTS.index("customer_id_nb_tx_1day_window")] == in_day + 1


def test_an_entity_without_a_row_has_empty_windows_plus_the_current_transaction():
    events = [e for e in make_events() if e["customer_id"] != 1]  # customer 1 unknown, terminal 10 known
    request = [(1, 10, 42.0, MON_NOON)]
    tiles = blobs_for(events, request)
    assert tiles[0, 0] is None and tiles[0, 1] is not None
    x, missing = run(request, tiles)
    assert missing.tolist() == [[True, False]]
    row = dict(zip(MODEL_INPUTS, x[0].tolist()))
    for name in CUSTOMER_SPENDING.feature_names():
        assert row[name] == (1.0 if "_nb_tx_" in name else 42.0)
    np.testing.assert_allclose(x, reference_vectors(events, request), rtol=1e-6)
    # No terminal row either: terminal windows (delayed, so without the current transaction) are all 0.
    x2, missing2 = run(request, np.array([[None, None]], dtype=object))
    assert missing2.tolist() == [[True, True]]
    assert all(v == 0.0 for k, v in zip(MODEL_INPUTS, x2[0].tolist()) if k.startswith("terminal_id_"))


def test_a_row_without_tiles_is_known_and_empty():
    empty = np.array([[layout_for(a).encode({}) for a in AGGREGATIONS]], dtype=object)
    x, missing = run([(1, 10, 9.0, MON_NOON)], empty)
    x_none, _ = run([(1, 10, 9.0, MON_NOON)], np.array([[None, None]], dtype=object))
    assert not missing.any()
    np.testing.assert_array_equal(x, x_none)


def test_tiles_of_another_layout_are_a_server_error_not_a_bad_request():
    width = layout_for(CUSTOMER_SPENDING).width + 1  # written by a repo whose customer tiles hold one more IR
    wrong = struct.pack("<4sHH", b"RTT1", width, 0) + np.zeros(1 + width).tobytes()
    with pytest.raises(RtmlError, match="another version of the feature repo") as info:
        run([(1, 10, 9.0, MON_NOON)], np.array([[wrong, None]], dtype=object))
    assert not isinstance(info.value, InvalidInputError) and info.value.http_status == 500


def missing_total(entity: str) -> float:
    return metrics.registry.get_sample_value("rtml_inference_missing_entities_total", {"entity": entity, "model_version": "t"}) or 0.0


def test_missing_entities_are_counted_or_rejected(tmp_path):
    cols = {"customer_id": np.array([1, 2, 3]), "terminal_id": np.array([10, 20, 30])}
    missing = np.array([[True, False], [False, False], [True, True]])
    before = {e: missing_total(e) for e in ("customer", "terminal")}
    FraudTransformer("fd", TransformerSettings(home=tmp_path))._account_missing(cols, missing, "t")
    assert missing_total("customer") == before["customer"] + 2 and missing_total("terminal") == before["terminal"] + 1
    reject = FraudTransformer("fd", TransformerSettings(home=tmp_path, missing_entity_policy="reject"))
    with pytest.raises(BadRequest, match=r"no online features for customer_id=1, customer_id=3, terminal_id=30$"):
        reject._account_missing(cols, missing, "t")


def test_epoch_seconds_accepts_ints_and_iso_strings():
    assert epoch_seconds(np.array([SAT_NIGHT])).tolist() == [SAT_NIGHT]
    parsed = epoch_seconds(np.array([b"2024-05-04T03:00:00Z", "2024-05-04T05:00:00+02:00", b"2024-05-04 03:00:00"], dtype=object))
    assert parsed.tolist() == [SAT_NIGHT] * 3
    w, n = calendar_features(parsed)
    assert w.tolist() == [1.0] * 3 and n.tolist() == [1.0] * 3


def test_bad_datetime_names_the_row():
    with pytest.raises(BadRequest, match=r"row 1: 'yesterday' is not an ISO-8601"):
        epoch_seconds(np.array([b"2024-05-04T03:00:00Z", b"yesterday"], dtype=object))
