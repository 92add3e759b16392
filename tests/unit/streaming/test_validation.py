"""Per-event validation: every rejection names the field and the problem."""

from __future__ import annotations

import json

import pytest

from feature_repo.sources import FRAUD_LABELS, TRANSACTIONS
from streaming.validation import InvalidEvent, decode_event

GOOD = {"transaction_id": 1, "tx_datetime": "2018-04-01T00:07:56Z", "customer_id": 5, "terminal_id": 9, "tx_amount": 12.345}


def enc(obj) -> bytes:
    return json.dumps(obj).encode()


def test_valid_transaction_is_normalised():
    ev = decode_event(TRANSACTIONS, enc(GOOD))
    assert ev["tx_amount"] == 12.35  # declared preprocessing: amounts rounded to cents
    assert ev["tx_datetime"] == 1522541276.0


def test_epoch_seconds_timestamp_accepted():
    assert decode_event(TRANSACTIONS, enc({**GOOD, "tx_datetime": 1522541276}))["tx_datetime"] == 1522541276.0


@pytest.mark.parametrize("payload,category,needle", [
    (b"{oops", "unparseable", "not JSON"),
    (b"[1,2]", "unparseable", "JSON object"),
    (None, "unparseable", "empty"),
    (enc({k: v for k, v in GOOD.items() if k != "tx_amount"}), "missing", "tx_amount"),
    (enc({**GOOD, "tx_amount": "12"}), "type", "tx_amount"),
    (enc({**GOOD, "customer_id": 1.5}), "type", "customer_id"),
    (enc({**GOOD, "customer_id": True}), "type", "customer_id"),
    (enc({**GOOD, "tx_amount": -1}), "range", "tx_amount"),
    (enc({**GOOD, "tx_datetime": "yesterday"}), "type", "tx_datetime"),
    (enc({**GOOD, "extra": 1}), "unknown_field", "extra"),
])
def test_bad_events_are_rejected_with_a_reason(payload, category, needle):
    with pytest.raises(InvalidEvent) as err:
        decode_event(TRANSACTIONS, payload)
    assert err.value.category == category
    assert needle in err.value.reason


def test_label_out_of_range():
    with pytest.raises(InvalidEvent, match="tx_fraud"):
        decode_event(FRAUD_LABELS, enc({"transaction_id": 1, "tx_datetime": "2018-04-01T00:00:00Z", "customer_id": 1,
                                        "terminal_id": 2, "tx_fraud": 3}))


def test_prediction_log_events_keep_features_as_json_and_check_booleans():
    from feature_repo.sources import PREDICTIONS

    good = {"request_id": "r1", "model_name": "fraud-detector", "model_version": "2", "customer_id": 1, "terminal_id": 2,
            "tx_amount": 10.0, "tx_datetime": 1522541276, "fraud_probability": 0.25, "is_fraud": False,
            "scored_at": 1700000000.5, "features": {"tx_amount": 10.0}}
    ev = decode_event(PREDICTIONS, enc(good))
    assert ev["features"] == '{"tx_amount":10.0}' and ev["is_fraud"] is False
    with pytest.raises(InvalidEvent, match="is_fraud"):
        decode_event(PREDICTIONS, enc({**good, "is_fraud": 1}))
    with pytest.raises(InvalidEvent, match="fraud_probability"):
        decode_event(PREDICTIONS, enc({**good, "fraud_probability": 1.5}))
