"""A synthetic stand-in for Give Me Some Credit, used only when the real file is absent.

Rows have the GMSC columns (same names, the same oddities: codes 96/98, age 0, utilisation far
above 1, missing income) and a label drawn from a logistic model of utilisation, delinquencies,
age and income, tuned to a base rate near GMSC's 6.7 %. It lets ``make serve`` run on a machine
without ``../shared/data``; its figures say nothing about real credit risk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

__all__ = ["write_synthetic_gmsc"]


def write_synthetic_gmsc(path: Path, n_rows: int = 30_000, seed: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    util = rng.beta(0.6, 1.8, n_rows)
    util = np.where(rng.random(n_rows) < 0.01, util * rng.uniform(2, 5000, n_rows), util)
    age = rng.integers(21, 90, n_rows)
    age[rng.random(n_rows) < 0.0005] = 0
    late = rng.poisson(0.25 + 0.8 * util.clip(0, 1), n_rows)
    late60 = rng.poisson(0.05 + 0.3 * util.clip(0, 1), n_rows)
    late90 = rng.poisson(0.05 + 0.4 * util.clip(0, 1), n_rows)
    code = rng.random(n_rows) < 0.002
    for a in (late, late60, late90):
        a[code] = rng.choice([96, 98], int(code.sum()))
    income = rng.lognormal(8.5, 0.6, n_rows).round()
    income_missing = rng.random(n_rows) < 0.2
    debt = rng.gamma(1.5, 0.25, n_rows)
    debt = np.where(income_missing, debt * rng.uniform(100, 3000, n_rows), debt)
    lines = rng.poisson(8, n_rows)
    estate = rng.poisson(1, n_rows)
    dependents = rng.poisson(0.8, n_rows).astype(float)
    dependents[rng.random(n_rows) < 0.03] = np.nan
    logit = (
        -4.0
        + 2.2 * util.clip(0, 1.5)
        + 0.6 * np.minimum(late, 10) * ~code
        + 0.9 * np.minimum(late90, 10) * ~code
        + 0.7 * np.minimum(late60, 10) * ~code
        + 2.5 * code
        - 0.02 * (age - 50)
        - 0.25 * (np.log(income) - 8.5)
    )
    y = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    frame = pl.DataFrame(
        {
            "": np.arange(1, n_rows + 1),
            "SeriousDlqin2yrs": y,
            "RevolvingUtilizationOfUnsecuredLines": util,
            "age": age,
            "NumberOfTime30-59DaysPastDueNotWorse": late,
            "DebtRatio": debt,
            "MonthlyIncome": pl.Series(income).set(pl.Series(income_missing), None),
            "NumberOfOpenCreditLinesAndLoans": lines,
            "NumberOfTimes90DaysLate": late90,
            "NumberRealEstateLoansOrLines": estate,
            "NumberOfTime60-89DaysPastDueNotWorse": late60,
            "NumberOfDependents": pl.Series(dependents).fill_nan(None),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path, null_value="NA")
    return path
