import numpy as np
import pandas as pd
import pytest

from components.metrics import card_precision_top_k, comparison_table, evaluate_scores
from rtml_common.errors import InvalidInputError


def _frame(rows):
    return pd.DataFrame(rows, columns=["day", "customer_id", "score", "tx_fraud"])


def test_card_precision_hand_computed_with_removal_of_found_cards():
    # Day 1: per-card max -> A .9 fraud, B .8 legit (max of .8 and .1), C .7 fraud; top 2 = A, B -> 1/2.
    # Day 2: A was found on day 1 and is removed; C .6 fraud, D .5 legit, E .1 fraud; top 2 = C, D -> 1/2.
    df = _frame([
        (1, "A", 0.9, 1), (1, "B", 0.8, 0), (1, "B", 0.1, 0), (1, "C", 0.7, 1),
        (2, "A", 0.95, 1), (2, "C", 0.6, 1), (2, "D", 0.5, 0), (2, "E", 0.1, 1),
    ])
    mean, per_day = card_precision_top_k(df, k=2)
    assert per_day == [0.5, 0.5]
    assert mean == 0.5
    # Without removal A stays on day 2: top 2 = A, C -> 2/2.
    mean_keep, per_day_keep = card_precision_top_k(df, k=2, remove_detected=False)
    assert per_day_keep == [0.5, 1.0] and mean_keep == 0.75


def test_card_is_compromised_when_any_of_its_transactions_is_fraud():
    # Card A: its top score comes from a legit transaction, but it has a fraud: it counts as compromised.
    df = _frame([(1, "A", 0.9, 0), (1, "A", 0.2, 1), (1, "B", 0.5, 0)])
    assert card_precision_top_k(df, k=1)[0] == 1.0
    # Precision divides by k even when fewer cards exist (the handbook's definition).
    assert card_precision_top_k(df, k=100)[0] == 0.01


def test_evaluate_scores_perfect_and_inverted():
    test = pd.DataFrame({"customer_id": np.arange(200), "tx_fraud": [1] * 20 + [0] * 180,
                         "event_timestamp": pd.Timestamp("2018-08-08", tz="UTC")})
    perfect = evaluate_scores(test, test["tx_fraud"].to_numpy(float))
    assert perfect["auc_roc"] == 1.0 and perfect["average_precision"] == 1.0
    assert perfect["card_precision_at_100"] == 0.2  # 20 compromised cards in the top 100
    inverted = evaluate_scores(test, 1 - test["tx_fraud"].to_numpy(float))
    assert inverted["auc_roc"] == 0.0


def test_evaluate_scores_rejects_bad_input():
    test = pd.DataFrame({"customer_id": [1, 2], "tx_fraud": [0, 0], "event_timestamp": pd.Timestamp("2018-08-08", tz="UTC")})
    with pytest.raises(InvalidInputError, match="single class"):
        evaluate_scores(test, np.array([0.1, 0.2]))
    with pytest.raises(InvalidInputError, match="2 test transactions"):
        evaluate_scores(test, np.array([0.1]))
    with pytest.raises(InvalidInputError, match="NaN"):
        evaluate_scores(test.assign(tx_fraud=[0, 1]), np.array([np.nan, 0.2]))


def test_comparison_table_lists_ours_then_the_handbook():
    table = comparison_table({"candidate": {"auc_roc": 0.9, "average_precision": 0.7, "card_precision_at_100": 0.3},
                              "champion": None})
    lines = table.splitlines()
    assert lines[1].startswith("candidate") and "0.900" in lines[1]
    assert any(line.startswith("Logistic regression") and "0.871" in line and "0.291" in line for line in lines)
    assert not any(line.startswith("champion") for line in lines)
