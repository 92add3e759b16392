"""Synthetic days of transactions at the fraud simulator's density, for the engine benchmarks."""

from __future__ import annotations

import numpy as np

DAY_S = 86400
SIM_START = 1_522_540_800  # 2018-04-01T00:00:00Z, the simulator's first day


def day_transactions(rng, day: int, first_id: int, mean_nb: np.ndarray, mean_amount: np.ndarray, n_terminals: int):
    """One simulated day in event-time order (``rtml.simulator.simulate``'s recipe: Poisson daily counts per
    customer, noon-centred times with out-of-day draws dropped, normal amounts, uniform terminals): ids,
    times (whole epoch seconds, the simulator's ISO precision), customers, terminals, amounts."""
    cust = np.repeat(np.arange(len(mean_nb)), rng.poisson(mean_nb))
    tod = np.trunc(rng.normal(DAY_S / 2, 20000, len(cust))).astype(np.int64)
    ok = (tod > 0) & (tod < DAY_S)  # out-of-day draws are dropped, not redrawn
    cust, tod = cust[ok], tod[ok]
    order = np.argsort(tod, kind="stable")
    cust, tod = cust[order], tod[order]
    mu = mean_amount[cust]
    amount = rng.normal(mu, mu / 2)
    neg = amount < 0
    amount[neg] = rng.uniform(0, 2 * mu[neg])
    amount = amount.round(2)
    term = rng.integers(0, n_terminals, len(cust))
    t = SIM_START + day * DAY_S + tod
    ids = first_id + np.arange(len(cust))
    return ids, t, cust, term, amount
