import pandas as pd
import pytest

from components.dataset import remove_known_compromised, split_validation, split_windows
from rtml_common.errors import InvalidInputError

UTC = "UTC"


def ts(s):
    return pd.Timestamp(s, tz=UTC)


def test_handbook_split_dates():
    w = split_windows("2018-07-25", 7, 7, 7)
    assert w.as_dict() == {"train_start": "2018-07-25", "train_end": "2018-08-01",
                           "test_start": "2018-08-08", "test_end": "2018-08-15"}
    assert w.delay_days == 7


@pytest.mark.parametrize("args, message", [
    (("not-a-date",), "not a date"), (("2018-07-25", 0), "train_days"), (("2018-07-25", 7, -1), "delay_days"),
    (("2018-07-25", 7, 7, 0), "test_days"),
])
def test_bad_windows_are_named(args, message):
    with pytest.raises(InvalidInputError, match=message):
        split_windows(*args)


def test_known_compromised_cards_leave_the_test_days_as_the_handbook_does():
    w = split_windows("2018-07-25", 7, 7, 2)  # test days 08-08 and 08-09
    train = pd.DataFrame({"customer_id": [1, 2], "tx_fraud": [1, 0]})
    # Card 3 defrauded on 07-31 (the train_end - 1 day: known before test day 0);
    # card 4 on 08-01 (known before test day 1 only); card 5 on 08-05 (never in time).
    labels = pd.DataFrame({"customer_id": [3, 4, 5], "tx_fraud": [1, 1, 1],
                           "tx_datetime": [ts("2018-07-31 10:00"), ts("2018-08-01 10:00"), ts("2018-08-05 10:00")]})
    test = pd.DataFrame({"customer_id": [1, 2, 3, 4, 5, 1, 2, 3, 4, 5],
                         "event_timestamp": [ts("2018-08-08 12:00")] * 5 + [ts("2018-08-09 12:00")] * 5})
    kept = remove_known_compromised(test, train, labels, w)
    day0 = kept[kept["event_timestamp"].dt.day == 8]["customer_id"].tolist()
    day1 = kept[kept["event_timestamp"].dt.day == 9]["customer_id"].tolist()
    assert day0 == [2, 4, 5]
    assert day1 == [2, 5]


def test_validation_holds_out_whole_cards_reproducibly():
    train = pd.DataFrame({"customer_id": [i % 50 for i in range(500)], "tx_fraud": 0})
    fit, val = split_validation(train, 0.2, seed=3)
    assert set(fit["customer_id"]).isdisjoint(val["customer_id"])
    assert val["customer_id"].nunique() == 10 and len(fit) + len(val) == 500
    fit2, val2 = split_validation(train, 0.2, seed=3)
    assert val2.equals(val)
    with pytest.raises(InvalidInputError, match="validation_fraction"):
        split_validation(train, 1.5, seed=0)
