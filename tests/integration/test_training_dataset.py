"""The dataset step on a simulated raw offline log equals the numpy reference of the feature definitions."""

import numpy as np
import pandas as pd
import pytest

from components.dataset import LABEL, build_training_sets
from feature_repo.batch_features import transaction_features
from feature_repo.model_inputs import MODEL_INPUTS
from tests.integration.training_data import write_offline_log

pytestmark = pytest.mark.integration
TRAIN_START, TRAIN_DAYS, DELAY_DAYS, TEST_DAYS = "2018-05-12", 5, 3, 4


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    tx = write_offline_log(root / "offline", n_customers=300, n_terminals=600, n_days=54, radius=15.0, seed=70)
    return root, tx


def _expected(tx: pd.DataFrame) -> pd.DataFrame:
    """Each transaction's 15 inputs by the numpy reference (feature_repo.batch_features), as float32."""
    f = transaction_features(tx)
    out = pd.DataFrame({c: f[c].to_numpy(np.float32) for c in MODEL_INPUTS}, index=f["TRANSACTION_ID"].to_numpy())
    out[LABEL] = tx["TX_FRAUD"].to_numpy(np.int64)
    return out


def test_every_transaction_gets_its_features_as_of_its_time_from_the_raw_log(logged):
    root, tx = logged
    sets = build_training_sets(None, root / "offline", TRAIN_START, TRAIN_DAYS, DELAY_DAYS, TEST_DAYS)
    start = pd.Timestamp(TRAIN_START, tz="UTC")
    in_train = tx[(tx["TX_DATETIME"] >= start) & (tx["TX_DATETIME"] < start + pd.Timedelta(days=TRAIN_DAYS))]
    got = pd.concat([sets.train, sets.validation]).set_index("transaction_id")
    assert sorted(got.index) == sorted(in_train["TRANSACTION_ID"])  # every training transaction, none missing
    expected = _expected(tx)
    pd.testing.assert_frame_equal(got[MODEL_INPUTS + [LABEL]], expected.loc[got.index, MODEL_INPUTS + [LABEL]], check_names=False)
    test = sets.test.set_index("transaction_id")
    assert len(test) > 0
    pd.testing.assert_frame_equal(test[MODEL_INPUTS + [LABEL]], expected.loc[test.index, MODEL_INPUTS + [LABEL]], check_names=False)


def test_a_log_that_starts_late_gives_short_windows_not_missing_rows(tmp_path):
    # Logged from the day before training only: no row is dropped, the 30-day windows simply hold less.
    tx = write_offline_log(tmp_path / "offline", n_customers=200, n_terminals=400, n_days=54, radius=15.0, seed=3,
                           log_from="2018-05-11")
    sets = build_training_sets(None, tmp_path / "offline", TRAIN_START, TRAIN_DAYS, DELAY_DAYS, TEST_DAYS)
    start = pd.Timestamp(TRAIN_START, tz="UTC")
    n_train = int(((tx["TX_DATETIME"] >= start) & (tx["TX_DATETIME"] < start + pd.Timedelta(days=TRAIN_DAYS))).sum())
    assert len(sets.train) + len(sets.validation) == n_train
    logged = tx[tx["TX_DATETIME"] >= pd.Timestamp("2018-05-11", tz="UTC")]
    got = pd.concat([sets.train, sets.validation]).set_index("transaction_id")
    expected = _expected(logged.reset_index(drop=True))
    pd.testing.assert_frame_equal(got[MODEL_INPUTS], expected.loc[got.index, MODEL_INPUTS], check_names=False)
