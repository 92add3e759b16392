"""Per-event validation: every rejection names the field and the problem."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_repo.sources import FRAUD_LABELS, TRANSACTIONS
from streaming.validation import InvalidEvent, batch_decoder_for, decode_event

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
    (enc({**GOOD, "transaction_id": 1 << 63}), "range", "transaction_id"),  # ids are int64 in Feast and in window state
    (enc({**GOOD, "terminal_id": 1 << 63}), "range", "terminal_id"),
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


MUTATIONS = [
    lambda e: e,
    lambda e: {**e, "tx_datetime": 1522541276},
    lambda e: {**e, "tx_datetime": "2018-04-01T00:07:56"},  # naive = UTC
    lambda e: {**e, "tx_datetime": "2018-04-01T02:07:56+02:00"},
    lambda e: {**e, "tx_amount": 7},
    lambda e: {**e, "tx_amount": -1},
    lambda e: {**e, "tx_amount": "12"},
    lambda e: {**e, "customer_id": True},
    lambda e: {**e, "customer_id": None},
    lambda e: {k: v for k, v in e.items() if k != "terminal_id"},
    lambda e: {**e, "extra": 1},
    lambda e: {**e, "tx_datetime": "yesterday"},
]


def _decoded_one_by_one(source, payloads):
    out = []
    for p in payloads:
        try:
            out.append(decode_event(source, p))
        except InvalidEvent as exc:
            out.append(exc)
    return out


def _same(batch, single):
    assert len(batch) == len(single)
    for b, s in zip(batch, single):
        if isinstance(s, InvalidEvent):
            assert isinstance(b, InvalidEvent) and (b.category, b.reason) == (s.category, s.reason)
        else:
            assert b == s and (b is None or list(b) == list(s))  # same values, same field order
            assert b is None or all(type(b[k]) is type(s[k]) for k in s)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(MUTATIONS) - 1), st.integers(0, 10**6),
                          st.floats(0, 10_000, allow_nan=False)), max_size=30),
       st.sampled_from([None, b"{oops", b"[1,2]", b'{"a":"', b'"},{"b":1}']))
def test_batch_decoder_decides_exactly_as_the_per_event_decoder(rows, junk):
    """Valid batches take the columnar path, any bad event sends the batch through the per-event
    decoder: either way every result (event, types, field order, rejection reason) is the same."""
    payloads = [enc(MUTATIONS[m]({**GOOD, "transaction_id": i, "tx_amount": amount})) for m, i, amount in rows]
    for batch in (payloads, payloads + [junk]):
        _same(batch_decoder_for(TRANSACTIONS)(batch), _decoded_one_by_one(TRANSACTIONS, batch))


def test_batch_decoder_fills_optional_fields_with_their_default():
    base = {"transaction_id": 1, "tx_datetime": "2018-04-01T00:00:00Z", "customer_id": 1, "terminal_id": 2, "tx_fraud": 1}
    payloads = [enc(base), enc({**base, "label_datetime": "2018-04-08T00:00:00Z"}), enc({**base, "label_datetime": None})]
    got = batch_decoder_for(FRAUD_LABELS)(payloads)
    assert [e["label_datetime"] for e in got] == [None, 1523145600.0, None]
    _same(got, _decoded_one_by_one(FRAUD_LABELS, payloads))


def test_batch_decoder_joined_payloads_cannot_pass_as_events():
    """Two halves of an event, each invalid alone, are each rejected: payloads are parsed one by one."""
    halves = [b'{"transaction_id": 1, "tx_datetime": "', b'"}']
    got = batch_decoder_for(TRANSACTIONS)(halves)
    assert all(isinstance(r, InvalidEvent) and r.category == "unparseable" for r in got)


@pytest.mark.parametrize("when", [
    "9999-12-31T23:59:59Z",  # parses, but beyond what pandas and the stores represent
    "2262-01-01T00:00:00+00:00",
    "1969-12-31T23:59:59Z",
    "0001-01-01T00:00:00+01:00",  # the offset moves it before datetime's year 1
    float(2 ** 64), 2 ** 63 - 1, -1, 1e300,
])
def test_timestamps_outside_the_supported_range_are_range_errors(when):
    payload = enc({**GOOD, "tx_datetime": when})
    with pytest.raises(InvalidEvent) as err:
        decode_event(TRANSACTIONS, payload)
    assert err.value.category == "range" and "tx_datetime" in err.value.message
    # the batch decoder decides the same, and the valid events beside it pass
    got = batch_decoder_for(TRANSACTIONS)([enc(GOOD), payload, enc(GOOD)])
    assert isinstance(got[1], InvalidEvent) and got[1].category == "range"
    assert got[0]["tx_datetime"] == got[2]["tx_datetime"] == 1522541276.0


def test_supported_time_range_edges():
    assert decode_event(TRANSACTIONS, enc({**GOOD, "tx_datetime": 0}))["tx_datetime"] == 0.0
    assert decode_event(TRANSACTIONS, enc({**GOOD, "tx_datetime": "2260-12-31T23:59:59Z"}))["tx_datetime"] == 9183110399.0
