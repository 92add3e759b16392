"""The fraud handbook's simulated dataset reproduced row for row (handbook ch. 3.2), for benchmarks on the book's own data.

``rtml.simulator`` draws the same statistics from one numpy ``Generator`` and runs in seconds, but
its rows are not the book's, so the book's published scores cannot be compared on it. This
module replays the book's generator draw for draw: the legacy global-seed scheme (numpy's
``RandomState`` and Python's ``random`` both seeded with the customer id, profiles from seeds 0
and 1, ``Series.sample(random_state=day)`` for compromised terminals and customers,
``random.seed(day)`` + ``random.sample`` for scenario-3 picks), the same order of draws, the same
truncation, rounding and drop rules, and the same time sort (numpy 1.x's quicksort, see
``book_argsort``) that numbers the rows.

Only bookkeeping is changed: private RNG objects replace the global ones (same streams, no
side effect on the caller), the transactions are collected in flat lists instead of one
DataFrame per customer, and the scenario loops index each terminal's / customer's rows instead
of scanning all rows 182 times. None of that changes a draw or its order. The book run (5,000
customers, 10,000 terminals, 183 days) takes 25-35 s on a 2-core machine, against the book's ~3
minutes; ``book_dataset`` caches it.

The book's code is GPL-3.0; this is an independent implementation of the same procedure.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from rtml.simulator import COLUMNS, DAY_S, Simulation, normalize, simulate
from rtml_common.errors import InvalidInputError

BOOK_RUN = {"n_customers": 5000, "n_terminals": 10000, "n_days": 183, "start_date": "2018-04-01", "radius": 5.0}
"""The generate_dataset arguments behind every result the handbook publishes (not the function's own defaults)."""
BOOK_SIZE = 1_754_155
CUSTOMER_SEED, TERMINAL_SEED = 0, 1
GENERATORS = ("handbook", "vectorised")
CACHE_DIR = Path.home() / ".cache" / "rtml" / "handbook"

# The book's constants, named.
_NOON_S, _TIME_SD_S = DAY_S / 2, 20000
_FRAUD_AMOUNT = 220
_TERMINALS_PER_DAY, _TERMINAL_DAYS = 2, 28
_CUSTOMERS_PER_DAY, _CUSTOMER_DAYS, _CUSTOMER_FACTOR = 3, 14, 5


@dataclass(frozen=True)
class BookSimulation(Simulation):
    """``Simulation`` plus the fraud counts as each scenario was added (the book prints 978 / 9,099 / 4,604)."""

    frauds_added: tuple[int, int, int] = (0, 0, 0)


def customer_profiles(n_customers: int, random_state: int = CUSTOMER_SEED) -> pd.DataFrame:
    """Customer profiles: per customer, in this order, x, y ~ U(0,100), mean_amount ~ U(5,100), mean_nb_tx_per_day ~ U(0,4)."""
    rs = np.random.RandomState(random_state)
    rows = []
    for cid in range(n_customers):
        x, y = rs.uniform(0, 100), rs.uniform(0, 100)
        mean_amount = rs.uniform(5, 100)
        rows.append((cid, x, y, mean_amount, mean_amount / 2, rs.uniform(0, 4)))
    return pd.DataFrame(rows, columns=["CUSTOMER_ID", "x_customer_id", "y_customer_id", "mean_amount", "std_amount", "mean_nb_tx_per_day"])


def terminal_profiles(n_terminals: int, random_state: int = TERMINAL_SEED) -> pd.DataFrame:
    """Terminal locations: per terminal x, y ~ U(0,100)."""
    rs = np.random.RandomState(random_state)
    xy = [(tid, rs.uniform(0, 100), rs.uniform(0, 100)) for tid in range(n_terminals)]
    return pd.DataFrame(xy, columns=["TERMINAL_ID", "x_terminal_id", "y_terminal_id"])


def terminals_within_radius(customers: pd.DataFrame, terminals: pd.DataFrame, r: float) -> list[list[int]]:
    """Per customer, the ids of terminals at Euclidean distance < r, ascending.

    The distance is computed as the book does, sqrt((dx)^2 + (dy)^2) compared with r (not the
    squared distance with r^2, which can differ by one ulp at the boundary); chunks of customers
    only batch that elementwise arithmetic.
    """
    cxy = customers[["x_customer_id", "y_customer_id"]].to_numpy(np.float64)
    txy = terminals[["x_terminal_id", "y_terminal_id"]].to_numpy(np.float64)
    out: list[list[int]] = []
    chunk = max(1, 2_000_000 // max(1, len(txy)))
    for s in range(0, len(cxy), chunk):
        diff = cxy[s:s + chunk, None, :] - txy[None, :, :]
        dist = np.sqrt(np.sum(np.square(diff), axis=2))
        out.extend(np.flatnonzero(row < r).tolist() for row in dist)
    return out


def customer_transactions(customer_id: int, mean_amount: float, std_amount: float, mean_nb_tx_per_day: float,
                          available_terminals: list[int], n_days: int) -> tuple[list, list, list]:
    """One customer's transactions as (seconds since start, terminal, unrounded amount), in draw order.

    Both RNGs are seeded with the customer id. Per day: a Poisson count; per transaction a
    noon-centred time truncated to int, dropped (no redraw, no amount drawn) outside (0, 86400);
    a normal amount, replaced by U(0, 2 * mean) when negative; then a uniform terminal, drawn only
    when the customer has one (otherwise the transaction is lost).
    """
    rs = np.random.RandomState(customer_id)
    rnd = random.Random(customer_id)
    poisson, normal, uniform, choice = rs.poisson, rs.normal, rs.uniform, rnd.choice
    seconds, terminal, amount = [], [], []
    for day in range(n_days):
        for _ in range(poisson(mean_nb_tx_per_day)):
            t = int(normal(_NOON_S, _TIME_SD_S))
            if 0 < t < DAY_S:
                a = normal(mean_amount, std_amount)
                if a < 0:
                    a = uniform(0, mean_amount * 2)
                if available_terminals:
                    terminal.append(choice(available_terminals))
                    seconds.append(t + day * DAY_S)
                    amount.append(a)
    return seconds, terminal, amount


def generate_dataset(n_customers: int = 5000, n_terminals: int = 10000,
                     n_days: int = 183, start_date: str | datetime = "2018-04-01",
                     radius: float = 5.0, customer_seed: int = CUSTOMER_SEED,
                     terminal_seed: int = TERMINAL_SEED) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(customers, terminals, transactions) before fraud labels, rows numbered as the book numbers them.

    Transactions are concatenated customer by customer and then sorted by time with the book's
    sort (see ``book_argsort``), so rows with equal timestamps get the book's TRANSACTION_IDs.
    TX_DATETIME is naive here, like the book's.
    """
    customers = customer_profiles(n_customers, customer_seed)
    terminals = terminal_profiles(n_terminals, terminal_seed)
    available = terminals_within_radius(customers, terminals, radius)
    customers["nb_terminals"] = [len(a) for a in available]
    cols: dict[str, list] = {"TX_TIME_SECONDS": [], "CUSTOMER_ID": [], "TERMINAL_ID": [], "TX_AMOUNT": []}
    for row, terms in zip(customers.itertuples(index=False), available):
        c_secs, c_term, c_amount = customer_transactions(int(row.CUSTOMER_ID), row.mean_amount, row.std_amount,
                                                         row.mean_nb_tx_per_day, terms, n_days)
        cols["TX_TIME_SECONDS"] += c_secs
        cols["TERMINAL_ID"] += c_term
        cols["TX_AMOUNT"] += c_amount
        cols["CUSTOMER_ID"] += [int(row.CUSTOMER_ID)] * len(c_secs)
    unsorted = np.asarray(cols["TX_TIME_SECONDS"], dtype=np.int64)
    order = book_argsort(unsorted)  # the book's time sort; equal timestamps keep the book's relative order
    secs = unsorted[order]
    origin = pd.Timestamp(start_date)
    origin = origin.tz_convert("UTC").tz_localize(None) if origin.tzinfo is not None else origin
    tx = pd.DataFrame({
        "TX_DATETIME": pd.to_datetime(secs, unit="s", origin=origin),
        "CUSTOMER_ID": np.asarray(cols["CUSTOMER_ID"], dtype=np.int64)[order],
        "TERMINAL_ID": np.asarray(cols["TERMINAL_ID"], dtype=np.int64)[order],
        "TX_AMOUNT": np.round(np.asarray(cols["TX_AMOUNT"], dtype=np.float64), decimals=2)[order],
        "TX_TIME_SECONDS": secs,
        "TX_TIME_DAYS": secs // DAY_S,
    })
    tx.insert(0, "TRANSACTION_ID", np.arange(len(tx), dtype=np.int64))
    return customers, terminals, tx


def _sift_down(v: list, a: list, i: int, n: int) -> None:
    """Move ``a[i]`` down the 1-based heap ``a[1..n]`` (ordered by ``v``) to where it belongs."""
    tmp, j = a[i], i << 1
    while j <= n:
        if j < n and v[a[j]] < v[a[j + 1]]:
            j += 1
        if v[tmp] < v[a[j]]:
            a[i], i, j = a[j], j, j + j
        else:
            break
    a[i] = tmp


def _aheapsort(v: list, t: np.ndarray, lo: int, n: int) -> None:
    """numpy's ``aheapsort_`` on ``t[lo:lo + n]``, the fallback of its introsort (1-based heap)."""
    a = [0] + t[lo:lo + n].tolist()
    for start in range(n >> 1, 0, -1):
        _sift_down(v, a, start, n)
    m = n
    while m > 1:
        a[1], a[m] = a[m], a[1]
        m -= 1
        _sift_down(v, a, 1, m)
    t[lo:lo + n] = a[1:]


def book_argsort(keys: np.ndarray, max_depth: int | None = None) -> np.ndarray:
    """``np.argsort(keys, kind="quicksort")`` as numpy 1.x computed it: the order pandas' default sort gave the book.

    Recent numpy sends 64-bit integer argsorts to SIMD sorts on x86 (numpy 2.4 on an AVX2 CPU:
    x86-simd-sort), which order equal keys differently, and the book's TRANSACTION_IDs depend on
    that order: 232k of its rows share a timestamp with another. This is numpy's portable introsort (quicksort.cpp ``aquicksort_``: median of 3,
    SMALL_QUICKSORT = 15, heapsort below a depth of 2 * floor(log2 n)), with each Hoare partition
    done in a few vectorised steps: the k-th left-scan stop is swapped with the k-th right-scan
    stop while it lies left of it, which is exactly what the scalar loop does. Leaves are
    insertion-sorted there, i.e. sorted stably, which one lexsort does for all of them at the end.
    ``max_depth`` overrides the depth budget (tests use it to reach the heapsort fallback).
    """
    v = np.asarray(keys)
    num = len(v)
    t = np.arange(num, dtype=np.int64)
    if num < 2:
        return t
    leaf = np.zeros(num, dtype=np.int64)  # start + 1 of the leaf each position belongs to, 0 = none
    stack: list[tuple[int, int, int]] = []
    values: list | None = None
    pl, pr = 0, num - 1
    cdepth = (num.bit_length() - 1) * 2 if max_depth is None else max_depth
    while True:
        if cdepth < 0:
            values = v.tolist() if values is None else values
            _aheapsort(values, t, pl, pr - pl + 1)
        else:
            while pr - pl > 15:
                pm = pl + ((pr - pl) >> 1)
                lo, mid, hi = t[pl], t[pm], t[pr]
                if v[mid] < v[lo]:
                    lo, mid = mid, lo
                if v[hi] < v[mid]:
                    hi, mid = mid, hi
                if v[mid] < v[lo]:
                    lo, mid = mid, lo
                vp = v[mid]
                t[pl], t[pr], t[pm], t[pr - 1] = lo, hi, t[pr - 1], mid
                seg = v[t[pl:pr]]
                left = pl + 1 + np.flatnonzero(seg[1:] >= vp)  # ascending; ends at pr - 1 (the pivot)
                right = pl + np.flatnonzero(seg[:-1] <= vp)[::-1]  # descending; ends at pl (<= pivot)
                k = min(len(left), len(right))
                crossed = left[:k] >= right[:k]
                swaps = int(np.argmax(crossed)) if crossed.any() else k
                if swaps:
                    li, ri = left[:swaps], right[:swaps]
                    t[li], t[ri] = t[ri], t[li].copy()
                    pi = int(min(left[swaps], right[swaps - 1]))
                else:
                    pi = int(left[0])
                t[pi], t[pr - 1] = t[pr - 1], t[pi]
                cdepth -= 1
                if pi - pl < pr - pi:
                    stack.append((pi + 1, pr, cdepth))
                    pr = pi - 1
                else:
                    stack.append((pl, pi - 1, cdepth))
                    pl = pi + 1
            if pr > pl:
                leaf[pl:pr + 1] = pl + 1
        if not stack:
            break
        pl, pr, cdepth = stack.pop()
    pos = np.flatnonzero(leaf)
    if len(pos):
        sub = t[pos]
        t[pos] = sub[np.lexsort((v[sub], leaf[pos]))]
    return t


def _rows_by(key: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions grouped by ``key`` (ascending within a group) and the group bounds."""
    order = np.argsort(key, kind="stable")
    return order, np.searchsorted(key[order], np.arange(size + 1))


def add_frauds(customers: pd.DataFrame, terminals: pd.DataFrame, tx: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, tuple[int, int, int]]:
    """Label ``tx`` (in place) with the three scenarios; returns (tx, compromised terminals, compromised customers, counts added).

    1. amount > 220. 2. For each start day d < max day: 2 terminals sampled with random_state=d;
    their transactions on days [d, d + 28) are fraud. 3. For each d: 3 customers sampled with
    random_state=d; of their transactions on days [d, d + 14), taken in row order,
    random.seed(d) + random.sample picks int(n / 3), whose amount is multiplied by 5 (not
    rounded, and the > 220 rule is not re-run). The last scenario to mark a row names it.
    """
    day = tx["TX_TIME_DAYS"].to_numpy()
    amount = tx["TX_AMOUNT"].to_numpy(np.float64).copy()
    fraud = np.zeros(len(tx), dtype=np.int64)
    scenario = np.zeros(len(tx), dtype=np.int64)
    n_start_days = int(day.max()) if len(tx) else 0

    hit = amount > _FRAUD_AMOUNT
    fraud[hit], scenario[hit] = 1, 1
    added_1 = int(fraud.sum())

    term_rows, term_bounds = _rows_by(tx["TERMINAL_ID"].to_numpy(), len(terminals))
    comp_t = np.zeros((n_start_days, _TERMINALS_PER_DAY), dtype=np.int64)
    for d in range(n_start_days):
        comp_t[d] = terminals["TERMINAL_ID"].sample(n=_TERMINALS_PER_DAY, random_state=d).to_numpy()
        for t in comp_t[d]:
            rows = term_rows[term_bounds[t]:term_bounds[t + 1]]
            rows = rows[(day[rows] >= d) & (day[rows] < d + _TERMINAL_DAYS)]
            fraud[rows], scenario[rows] = 1, 2
    added_2 = int(fraud.sum()) - added_1

    cust_rows, cust_bounds = _rows_by(tx["CUSTOMER_ID"].to_numpy(), len(customers))
    comp_c = np.zeros((n_start_days, _CUSTOMERS_PER_DAY), dtype=np.int64)
    for d in range(n_start_days):
        comp_c[d] = customers["CUSTOMER_ID"].sample(n=_CUSTOMERS_PER_DAY, random_state=d).to_numpy()
        # The candidates in row order, as a boolean filter of the whole table lists them.
        rows = np.unique(np.concatenate([cust_rows[cust_bounds[c]:cust_bounds[c + 1]] for c in comp_c[d]]))
        rows = rows[(day[rows] >= d) & (day[rows] < d + _CUSTOMER_DAYS)]
        picked = np.asarray(random.Random(d).sample(rows.tolist(), k=int(len(rows) / 3)), dtype=np.int64)
        amount[picked] = amount[picked] * _CUSTOMER_FACTOR
        fraud[picked], scenario[picked] = 1, 3
    added_3 = int(fraud.sum()) - added_2 - added_1

    tx["TX_AMOUNT"], tx["TX_FRAUD"], tx["TX_FRAUD_SCENARIO"] = amount, fraud, scenario
    return tx, comp_t, comp_c, (added_1, added_2, added_3)


def simulate_book(n_customers: int = 5000, n_terminals: int = 10000,
                  n_days: int = 183, start_date: str | datetime = "2018-04-01",
                  radius: float = 5.0) -> BookSimulation:
    """The handbook's dataset, exactly, in rtml's ``COLUMNS`` (UTC timestamps, int64 / float64), with profiles and draws.

    The defaults are the book run: 1,754,155 transactions, 14,681 frauds. Other sizes give what
    the book's code would give for them; there is no seed argument, the book's seeds are fixed.
    """
    if n_customers < 1 or n_terminals < 1 or n_days < 1:
        raise InvalidInputError(f"n_customers, n_terminals and n_days must be >= 1, got {n_customers}, {n_terminals}, {n_days}")
    if radius <= 0:
        raise InvalidInputError(f"radius must be > 0, got {radius}")
    try:
        pd.Timestamp(start_date)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"start_date {start_date!r} is not a date") from exc
    customers, terminals, tx = generate_dataset(n_customers, n_terminals, n_days, start_date, radius)
    tx, comp_t, comp_c, added = add_frauds(customers, terminals, tx)
    return BookSimulation(normalize(tx)[COLUMNS], customers, terminals, comp_t, comp_c, added)


def simulate_with(generator: str = "handbook", n_customers: int = 5000, n_terminals: int = 10000,
                  n_days: int = 183, start_date: str | datetime = "2018-04-01",
                  radius: float = 5.0, seed: int = 0) -> Simulation:
    """One entry point for either generator: ``handbook`` (exact book rows; ``seed`` must stay 0) or ``vectorised``."""
    if generator == "vectorised":
        return simulate(n_customers, n_terminals, n_days, start_date, radius, seed)
    if generator != "handbook":
        raise InvalidInputError(f"unknown generator {generator!r}: expected one of {GENERATORS}")
    if seed != 0:
        raise InvalidInputError("the handbook generator has the book's fixed seeds; seed must be 0")
    return simulate_book(n_customers, n_terminals, n_days, start_date, radius)


def book_dataset(cache_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """The book-size dataset in ``COLUMNS`` and its generation info, generated once and then read from the cache.

    ``cache_dir`` (default ~/.cache/rtml/handbook) holds ``transactions.parquet`` and ``info.json``
    (fraud counts as each scenario was added, generation seconds). A cache whose row count is not
    the book's is regenerated.
    """
    path = Path(cache_dir) if cache_dir is not None else CACHE_DIR
    file, info_file = path / "transactions.parquet", path / "info.json"
    if file.is_file() and info_file.is_file():
        df = normalize(pd.read_parquet(file))
        if len(df) == BOOK_SIZE:
            return df, json.loads(info_file.read_text())
    started = time.perf_counter()
    sim = simulate_book()
    info = {"frauds_added": list(sim.frauds_added), "generation_seconds": round(time.perf_counter() - started, 1),
            "run": BOOK_RUN, "rows": len(sim.transactions)}
    path.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    sim.transactions.to_parquet(tmp, index=False)
    tmp.replace(file)  # a reader never sees a half-written cache
    info_file.write_text(json.dumps(info, indent=2))
    return sim.transactions, info


def book_transactions(cache_dir: str | Path | None = None) -> pd.DataFrame:
    """The book-size transactions (``book_dataset`` without the info)."""
    return book_dataset(cache_dir)[0]
