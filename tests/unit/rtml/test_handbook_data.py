"""The handbook's generator reproduced exactly: the book's published example rows, a naive reference on a small run, the sort."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from rtml import handbook_data as hd
from rtml.simulator import COLUMNS, Simulation
from rtml_common.errors import InvalidInputError

# Published outputs of the book's ch. 3.2 notebook: 5 customers and 5 terminals, both from seed 0, r = 50.
BOOK_CUSTOMERS = [
    (54.881350, 71.518937, 62.262521, 31.131260, 2.179533),
    (42.365480, 64.589411, 46.570785, 23.285393, 3.567092),
    (96.366276, 38.344152, 80.213879, 40.106939, 2.115580),
    (56.804456, 92.559664, 11.748426, 5.874213, 0.348517),
    (2.021840, 83.261985, 78.924891, 39.462446, 3.480049),
]
BOOK_TERMINALS = [(54.881350, 71.518937), (60.276338, 54.488318), (42.365480, 64.589411), (43.758721, 89.177300), (96.366276, 38.344152)]
BOOK_AVAILABLE = [[0, 1, 2, 3], [0, 1, 2, 3], [1, 4], [0, 1, 2, 3], [2, 3]]
# Customer 0 over 5 days: (TX_TIME_SECONDS, TERMINAL_ID, TX_AMOUNT), in the book's generation order.
BOOK_CUSTOMER_0 = [
    (26345, 3, 123.59), (68522, 3, 46.51), (64816, 0, 77.34), (141182, 2, 32.35), (137138, 3, 63.30),
    (143211, 3, 13.59), (118266, 2, 54.72), (159887, 3, 51.89), (216947, 2, 117.91), (204609, 1, 67.72),
    (206749, 1, 28.46), (228794, 2, 50.25), (200484, 1, 93.26), (263735, 0, 46.40), (293638, 2, 23.26),
    (404349, 1, 71.96), (373279, 2, 52.69),
]
# The last five of the 65 rows the book prints for all five customers (all customer 4).
BOOK_CUSTOMER_4_TAIL = [(373279, 2, 111.38), (370799, 3, 80.36), (408214, 2, 53.25), (391898, 2, 36.44), (391126, 3, 17.53)]


def test_profiles_and_linking_match_the_books_printed_example():
    customers = hd.customer_profiles(5, random_state=0)
    terminals = hd.terminal_profiles(5, random_state=0)
    got = customers[["x_customer_id", "y_customer_id", "mean_amount", "std_amount", "mean_nb_tx_per_day"]].to_numpy()
    np.testing.assert_allclose(got, np.array(BOOK_CUSTOMERS), atol=5e-7)
    np.testing.assert_allclose(terminals[["x_terminal_id", "y_terminal_id"]].to_numpy(), np.array(BOOK_TERMINALS), atol=5e-7)
    assert hd.terminals_within_radius(customers, terminals, 50) == BOOK_AVAILABLE


def test_customer_transactions_match_the_books_printed_example():
    customers = hd.customer_profiles(5, random_state=0)
    rows = []
    for c, terms in zip(customers.itertuples(index=False), BOOK_AVAILABLE):
        secs, term, amount = hd.customer_transactions(c.CUSTOMER_ID, c.mean_amount, c.std_amount, c.mean_nb_tx_per_day, terms, 5)
        rows.append(list(zip(secs, term, np.round(amount, 2).tolist())))
    assert rows[0] == BOOK_CUSTOMER_0
    assert sum(len(r) for r in rows) == 65
    assert rows[4][-5:] == BOOK_CUSTOMER_4_TAIL


# ---- an independent, naive transcription of the book's procedure (global RNGs, row-by-row, pandas filters) ----

def _reference_argsort(v, max_depth=None):
    """numpy 1.x ``aquicksort_`` (quicksort.cpp), element by element."""
    v, num = list(v), len(v)
    t = list(range(num))
    if num < 2:
        return np.array(t, dtype=np.int64)

    def heap(lo, n):
        a = [None] + t[lo:lo + n]
        for start in range(n >> 1, 0, -1):
            tmp, i, j = a[start], start, 2 * start
            while j <= n:
                if j < n and v[a[j]] < v[a[j + 1]]:
                    j += 1
                if not v[tmp] < v[a[j]]:
                    break
                a[i], i, j = a[j], j, 2 * j
            a[i] = tmp
        while n > 1:
            tmp, a[n] = a[n], a[1]
            n -= 1
            i, j = 1, 2
            while j <= n:
                if j < n and v[a[j]] < v[a[j + 1]]:
                    j += 1
                if not v[tmp] < v[a[j]]:
                    break
                a[i], i, j = a[j], j, 2 * j
            a[i] = tmp
        t[lo:lo + len(a) - 1] = a[1:]

    stack, pl, pr = [], 0, num - 1
    depth = (num.bit_length() - 1) * 2 if max_depth is None else max_depth
    while True:
        if depth < 0:
            heap(pl, pr - pl + 1)
        else:
            while pr - pl > 15:
                pm = pl + (pr - pl) // 2
                if v[t[pm]] < v[t[pl]]:
                    t[pm], t[pl] = t[pl], t[pm]
                if v[t[pr]] < v[t[pm]]:
                    t[pr], t[pm] = t[pm], t[pr]
                if v[t[pm]] < v[t[pl]]:
                    t[pm], t[pl] = t[pl], t[pm]
                vp, pi, pj = v[t[pm]], pl, pr - 1
                t[pm], t[pj] = t[pj], t[pm]
                while True:
                    pi += 1
                    while v[t[pi]] < vp:
                        pi += 1
                    pj -= 1
                    while vp < v[t[pj]]:
                        pj -= 1
                    if pi >= pj:
                        break
                    t[pi], t[pj] = t[pj], t[pi]
                t[pi], t[pr - 1] = t[pr - 1], t[pi]
                depth -= 1
                if pi - pl < pr - pi:
                    stack.append((pi + 1, pr, depth))
                    pr = pi - 1
                else:
                    stack.append((pl, pi - 1, depth))
                    pl = pi + 1
            for i in range(pl + 1, pr + 1):
                item, j = t[i], i
                while j > pl and v[item] < v[t[j - 1]]:
                    t[j] = t[j - 1]
                    j -= 1
                t[j] = item
        if not stack:
            break
        pl, pr, depth = stack.pop()
    return np.array(t, dtype=np.int64)


def _reference_dataset(n_customers, n_terminals, n_days, radius, start):
    np.random.seed(0)
    profiles = []
    for c in range(n_customers):
        x, y = np.random.uniform(0, 100), np.random.uniform(0, 100)
        mean = np.random.uniform(5, 100)
        profiles.append((c, x, y, mean, mean / 2, np.random.uniform(0, 4)))
    np.random.seed(1)
    places = [(np.random.uniform(0, 100), np.random.uniform(0, 100)) for _ in range(n_terminals)]
    rows = []
    for c, x, y, mean, sd, rate in profiles:
        near = [j for j, (px, py) in enumerate(places) if np.sqrt((x - px) * (x - px) + (y - py) * (y - py)) < radius]
        random.seed(c)
        np.random.seed(c)
        for day in range(n_days):
            for _ in range(np.random.poisson(rate)):
                second = int(np.random.normal(86400 / 2, 20000))
                if not 0 < second < 86400:
                    continue
                amount = np.random.normal(mean, sd)
                if amount < 0:
                    amount = np.random.uniform(0, mean * 2)
                amount = np.round(amount, decimals=2)
                if near:
                    rows.append((second + day * 86400, day, c, random.choice(near), amount))
    df = pd.DataFrame(rows, columns=["TX_TIME_SECONDS", "TX_TIME_DAYS", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT"])
    df = df.iloc[_reference_argsort(df["TX_TIME_SECONDS"].tolist())].reset_index(drop=True)
    df["TX_DATETIME"] = pd.to_datetime(df["TX_TIME_SECONDS"], unit="s", origin=start).dt.tz_localize("UTC")
    df["TRANSACTION_ID"] = np.arange(len(df))
    df["TX_FRAUD"], df["TX_FRAUD_SCENARIO"] = 0, 0
    df.loc[df.TX_AMOUNT > 220, ["TX_FRAUD", "TX_FRAUD_SCENARIO"]] = [1, 1]
    added = [int(df.TX_FRAUD.sum())]
    terminal_ids, customer_ids = pd.Series(range(n_terminals)), pd.Series(range(n_customers))
    for day in range(df.TX_TIME_DAYS.max()):
        chosen = terminal_ids.sample(n=2, random_state=day)
        hit = (df.TX_TIME_DAYS >= day) & (df.TX_TIME_DAYS < day + 28) & df.TERMINAL_ID.isin(chosen)
        df.loc[hit, ["TX_FRAUD", "TX_FRAUD_SCENARIO"]] = [1, 2]
    added.append(int(df.TX_FRAUD.sum()) - added[0])
    for day in range(df.TX_TIME_DAYS.max()):
        chosen = customer_ids.sample(n=3, random_state=day).values
        candidates = df[(df.TX_TIME_DAYS >= day) & (df.TX_TIME_DAYS < day + 14) & df.CUSTOMER_ID.isin(chosen)]
        random.seed(day)
        picked = random.sample(list(candidates.index.values), k=int(len(candidates) / 3))
        df.loc[picked, "TX_AMOUNT"] = df.loc[picked, "TX_AMOUNT"] * 5
        df.loc[picked, ["TX_FRAUD", "TX_FRAUD_SCENARIO"]] = [1, 3]
    added.append(int(df.TX_FRAUD.sum()) - added[1] - added[0])
    return df, tuple(added)


@pytest.fixture(scope="module")
def small_run():
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        # r = 4 with 600 terminals: ~3 terminals per customer, so a few customers have none.
        reference, added = _reference_dataset(100, 600, 40, 4.0, "2018-04-01")
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return reference, added, hd.simulate_book(100, 600, 40, "2018-04-01", 4.0)


def test_small_run_equals_the_naive_reference_row_for_row(small_run):
    reference, added, sim = small_run
    assert isinstance(sim, Simulation)
    assert list(sim.transactions.columns) == COLUMNS
    pd.testing.assert_frame_equal(sim.transactions, reference[COLUMNS].astype(sim.transactions.dtypes.to_dict()), check_exact=True)
    assert sim.frauds_added == added
    assert (sim.customers["nb_terminals"] == 0).any()  # the lost-transaction path is exercised
    assert sim.transactions["TX_TIME_SECONDS"].duplicated().any()  # and the tie order of the sort
    assert set(sim.transactions["TX_FRAUD_SCENARIO"]) == {0, 1, 2, 3}


def test_small_run_labels_follow_the_recorded_draws(small_run):
    _, _, sim = small_run
    tx = sim.transactions
    assert sim.compromised_terminals.shape == (tx["TX_TIME_DAYS"].max(), 2)
    assert sim.compromised_customers.shape == (tx["TX_TIME_DAYS"].max(), 3)
    day, term = tx["TX_TIME_DAYS"].to_numpy(), tx["TERMINAL_ID"].to_numpy()
    on_compromised = np.zeros(len(tx), bool)
    for d, terminals in enumerate(sim.compromised_terminals):
        on_compromised |= np.isin(term, terminals) & (day >= d) & (day < d + 28)
    scenario = tx["TX_FRAUD_SCENARIO"].to_numpy()
    assert (on_compromised[scenario == 2]).all()
    assert (tx["TX_FRAUD"].to_numpy() == (scenario > 0)).all()
    assert sum(sim.frauds_added) == int(tx["TX_FRAUD"].sum())


@pytest.mark.parametrize("case", ["ties", "few_values", "sorted", "reversed", "organ_pipe", "constant", "tiny"])
def test_book_argsort_is_numpys_portable_introsort(case):
    rng = np.random.default_rng(len(case))
    for n in (17, 40, 500, 2500):
        x = rng.integers(0, max(2, n // 4), n)
        x = {"ties": x, "few_values": x % 3, "sorted": np.sort(x), "reversed": np.sort(x)[::-1],
             "organ_pipe": np.concatenate([np.sort(x[: n // 2]), np.sort(x[n // 2:])[::-1]]),
             "constant": np.zeros(n, np.int64), "tiny": x[: n % 7]}[case].astype(np.int64)
        got = hd.book_argsort(x)
        np.testing.assert_array_equal(got, _reference_argsort(x))
        assert (np.diff(x[got]) >= 0).all()


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_book_argsort_heapsort_fallback(depth):
    x = np.random.default_rng(depth).integers(0, 200, 1500).astype(np.int64)
    np.testing.assert_array_equal(hd.book_argsort(x, max_depth=depth), _reference_argsort(x, max_depth=depth))


def test_entry_point_validates_and_dispatches():
    assert not isinstance(hd.simulate_with("vectorised", 30, 60, 5, radius=20.0, seed=3), hd.BookSimulation)
    assert isinstance(hd.simulate_with("handbook", 30, 60, 5, radius=20.0), hd.BookSimulation)
    with pytest.raises(InvalidInputError, match="unknown generator"):
        hd.simulate_with("exact", 30, 60, 5)
    with pytest.raises(InvalidInputError, match="seed"):
        hd.simulate_with("handbook", 30, 60, 5, seed=1)
    with pytest.raises(InvalidInputError):
        hd.simulate_book(0, 10, 5)
    with pytest.raises(InvalidInputError):
        hd.simulate_book(10, 10, 5, radius=0)


def test_book_transactions_caches_and_regenerates_a_wrong_size_file(tmp_path, monkeypatch):
    small = hd.simulate_book(30, 60, 5, radius=20.0)
    calls = []
    monkeypatch.setattr(hd, "simulate_book", lambda: calls.append(1) or small)
    monkeypatch.setattr(hd, "BOOK_SIZE", len(small.transactions))
    first = hd.book_transactions(tmp_path)
    again = hd.book_transactions(tmp_path)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(again, small.transactions)
    monkeypatch.setattr(hd, "BOOK_SIZE", len(small.transactions) + 1)  # a stale cache is rebuilt
    hd.book_transactions(tmp_path)
    assert len(calls) == 2
