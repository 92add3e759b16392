"""Assembling the model input: MODEL_INPUTS order, folding the current transaction, defaults, datetimes."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from feature_repo.model_inputs import MODEL_INPUTS, calendar_features
from inference.assembly import ONLINE_FEATURES, assemble, epoch_seconds
from inference.tensors import BadRequest

SAT_NIGHT = int(datetime(2024, 5, 4, 3, 0, tzinfo=timezone.utc).timestamp())  # Saturday 03:00 UTC
MON_NOON = int(datetime(2024, 5, 6, 12, 0, tzinfo=timezone.utc).timestamp())


def online_row(**values) -> list[float]:
    return [values.get(name, np.nan) for name in ONLINE_FEATURES]


def test_columns_follow_model_inputs_and_customer_windows_include_the_current_transaction():
    known = {name: float(i + 1) for i, name in enumerate(ONLINE_FEATURES)}
    online = np.array([online_row(**known)])
    x, no_cust, no_term = assemble(np.array([30.0]), np.array([SAT_NIGHT]), online, np.zeros(15))
    assert x.dtype == np.float32 and x.shape == (1, len(MODEL_INPUTS))
    row = dict(zip(MODEL_INPUTS, x[0].tolist()))
    assert row["tx_amount"] == 30.0 and row["tx_during_weekend"] == 1.0 and row["tx_during_night"] == 1.0
    for window in ("1day", "7day", "30day"):
        count, avg = known[f"customer_id_nb_tx_{window}_window"], known[f"customer_id_avg_amount_{window}_window"]
        assert row[f"customer_id_nb_tx_{window}_window"] == count + 1
        assert row[f"customer_id_avg_amount_{window}_window"] == pytest.approx((avg * count + 30.0) / (count + 1))
        for kind in ("nb_tx", "risk"):  # terminal features pass through untouched
            assert row[f"terminal_id_{kind}_{window}_window"] == known[f"terminal_id_{kind}_{window}_window"]
    assert not no_cust[0] and not no_term[0]


def test_unknown_entities_get_the_model_defaults_then_the_fold():
    defaults = np.array([0.0] * 3 + [0.0] * 6 + [7.0, 0.25] * 3)
    online = np.array([[np.nan] * len(ONLINE_FEATURES)])
    x, no_cust, no_term = assemble(np.array([12.0]), np.array([MON_NOON]), online, defaults)
    row = dict(zip(MODEL_INPUTS, x[0].tolist()))
    assert no_cust[0] and no_term[0]
    assert row["customer_id_nb_tx_7day_window"] == 1.0 and row["customer_id_avg_amount_7day_window"] == 12.0
    assert row["terminal_id_nb_tx_7day_window"] == 7.0 and row["terminal_id_risk_7day_window"] == 0.25
    assert row["tx_during_weekend"] == 0.0 and row["tx_during_night"] == 0.0


def test_missing_masks_are_per_entity():
    known = {name: 1.0 for name in ONLINE_FEATURES}
    only_terminal = online_row(**{k: v for k, v in known.items() if k.startswith("terminal")})
    x, no_cust, no_term = assemble(np.array([1.0, 1.0]), np.array([MON_NOON] * 2), np.array([online_row(**known), only_terminal]), np.zeros(15))
    assert no_cust.tolist() == [False, True] and no_term.tolist() == [False, False]


def test_epoch_seconds_accepts_ints_and_iso_strings():
    assert epoch_seconds(np.array([SAT_NIGHT])).tolist() == [SAT_NIGHT]
    parsed = epoch_seconds(np.array([b"2024-05-04T03:00:00Z", "2024-05-04T05:00:00+02:00", b"2024-05-04 03:00:00"], dtype=object))
    assert parsed.tolist() == [SAT_NIGHT] * 3
    w, n = calendar_features(parsed)
    assert w.tolist() == [1.0] * 3 and n.tolist() == [1.0] * 3


def test_bad_datetime_names_the_row():
    with pytest.raises(BadRequest, match=r"row 1: 'yesterday' is not an ISO-8601"):
        epoch_seconds(np.array([b"2024-05-04T03:00:00Z", b"yesterday"], dtype=object))
