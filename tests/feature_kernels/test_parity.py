"""Column path vs row path: bit-for-bit agreement, checked against a Python reference.

Every operation gets random specs (random parameters) and random rows with missing cells, missing
codes, range edges, extreme and subnormal values, non-integers, infinities and unknown
categories. Each batch goes through

* the row path, one row at a time (``transform_row``), checked against a small Python reference
  of the spec semantics (which rows are bad, which fields, the values);
* the micro-batch row path (``transform_rows``), which must equal the stacked single rows;
* the column path (``transform_columns``) on the whole batch (a ``FeatureError`` listing exactly
  the row path's violations when any row is bad), on the good rows only (bitwise equal to the row
  path), and on each bad row alone.

A missing cell is an absent key on the row path and NaN (with assorted NaN bit patterns) or
``None`` on the column path. Each operation runs through Hypothesis *and* a deterministic numpy
batch of at least 1,000 rows, so the row-count guarantee does not depend on Hypothesis.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from feature_kernels import (
    FeatureError,
    FeaturePipeline,
    feature_error_violations,
    parse_spec,
)

T = TypeVar("T")
NAN = float("nan")
F32_MAX = float(np.finfo(np.float32).max)
F64_MAX = float(np.finfo(np.float64).max)
MAX_COLUMN_VIOLATIONS = 20  # the column path lists at most this many bad rows per column

NumericRow = dict[str, float]
CategoricalRow = dict[str, str]
Row = tuple[NumericRow, CategoricalRow]
Spec = dict[str, Any]

# NaN bit patterns the column path must all read as "missing": quiet, negative, signalling, payload.
NAN_PATTERNS = np.array(
    [
        0x7FF8000000000000,
        0xFFF8000000000000,
        0x7FF0000000000001,
        0x7FF4000000000123,
        0xFFFFFFFFFFFFFFFF,
    ],
    dtype=np.uint64,
)

EXTREMES = (
    0.0,
    -0.0,
    1e308,
    -1e308,
    F64_MAX,
    -F64_MAX,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,  # smallest normal
    -2.2250738585072014e-308,
    F32_MAX,
    -F32_MAX,
    float(np.nextafter(F32_MAX, math.inf)),
    3.4028235677973366e38,  # float32 max + half an ulp: rounds to inf without saturation
    1e39,
    -1e39,
    1.401298464324817e-45,  # smallest float32 subnormal
    7e-46,  # rounds to 0 in float32
    1e-300,
    math.inf,
    -math.inf,
)


# --------------------------------------------------------------------------------------------
# Randomness sources: the same generators run under Hypothesis and under a seeded numpy rng.


class Source(Protocol):
    def integer(self, lo: int, hi: int) -> int: ...
    def real(self) -> float: ...
    def text(self) -> str: ...


class HypothesisSource:
    def __init__(self, data: st.DataObject) -> None:
        self._data = data

    def integer(self, lo: int, hi: int) -> int:
        return self._data.draw(st.integers(lo, hi))

    def real(self) -> float:
        return self._data.draw(st.floats(allow_nan=False, allow_infinity=False))

    def text(self) -> str:
        return self._data.draw(st.text(max_size=6))


class RngSource:
    _ALPHABET = "abcxyzAB é_-/,.0 "

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def integer(self, lo: int, hi: int) -> int:
        return int(self._rng.integers(lo, hi + 1))

    def real(self) -> float:
        kind = self.integer(0, 2)
        if kind == 0:
            return float(self._rng.normal() * 10.0 ** self.integer(-30, 30))
        if kind == 1:
            while True:  # any finite bit pattern: subnormals, huge values, -0.0 ...
                x = float(
                    self._rng.integers(0, 2**64, dtype=np.uint64, endpoint=False).view(np.float64)
                )
                if math.isfinite(x):
                    return x
        return float(self._rng.uniform(-1000.0, 1000.0))

    def text(self) -> str:
        n = self.integer(0, 6)
        return "".join(self._ALPHABET[self.integer(0, len(self._ALPHABET) - 1)] for _ in range(n))


def choice(src: Source, options: Sequence[T]) -> T:
    return options[src.integer(0, len(options) - 1)]


# --------------------------------------------------------------------------------------------
# Spec generators. Spec numbers are short decimals, 0, -0.0 or +-1e308: numbers the Rust side
# reads back exactly (see test_spec.py for the numbers it does not).

CATEGORY_POOL = (
    "a",
    "b",
    "c",
    "A",
    "none",
    "yes",
    "x y",
    "é",
    "0",
    "1.5",
    "car (new)",
    "... < 0 DM",
)


def spec_float(src: Source) -> float:
    kind = src.integer(0, 9)
    if kind == 0:
        return choice(src, (0.0, -0.0, 1e308, -1e308, 0.5, -0.5))
    if kind <= 5:
        return float(src.integer(-200, 1000))
    return float(f"{src.integer(-(10**6), 10**6)}e{src.integer(-6, 3)}")


def sorted_pair(src: Source) -> tuple[float, float]:
    a, b = spec_float(src), spec_float(src)
    return (a, b) if a <= b else (b, a)


def numeric_input(src: Source) -> dict[str, Any]:
    d: dict[str, Any] = {
        "type": choice(src, ("number", "integer")),
        "required": choice(src, (True, False)),
    }
    lo, hi = sorted_pair(src)
    shape = src.integer(0, 4)
    if shape == 1:
        d["range"] = [lo, None]
    elif shape == 2:
        d["range"] = [None, hi]
    elif shape >= 3:
        d["range"] = [lo, hi]
    codes = [
        choice(src, (0.0, 96.0, 98.0, -1.0, 0.5)) if src.integer(0, 1) else spec_float(src)
        for _ in range(src.integer(0, 2))
    ]
    if codes:
        d["missing_codes"] = codes
    if src.integer(0, 2) == 0:
        d["impute"] = spec_float(src)
    return d


def categorical_input(src: Source, known: Sequence[str]) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "categorical", "required": choice(src, (True, False))}
    kind = src.integer(0, 3)
    if kind == 1:
        d["impute"] = choice(src, known)
    elif kind == 2:
        d["impute"] = (
            "never-listed"  # imputing an unknown category: fine only under unknown: missing
        )
    return d


def categories(src: Source) -> list[str]:
    pool = list(CATEGORY_POOL)
    return [pool.pop(src.integer(0, len(pool) - 1)) for _ in range(src.integer(1, 5))]


def wrap(inputs: dict[str, Any], features: list[dict[str, Any]]) -> Spec:
    return {
        "name": "parity",
        "version": 1,
        "target": {"column": "y", "positive": [1]},
        "inputs": inputs,
        "features": features,
    }


def feat(name: str, op: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "op": op, "reason": f"{name} reason", **kw}


def clip_bounds(src: Source) -> dict[str, float]:
    lo, hi = sorted_pair(src)
    kind = src.integer(0, 3)
    return [{}, {"min": lo}, {"max": hi}, {"min": lo, "max": hi}][kind]


def spec_value(src: Source) -> Spec:
    return wrap({"x": numeric_input(src)}, [feat("v", "value", input="x")])


def spec_clip(src: Source) -> Spec:
    return wrap({"x": numeric_input(src)}, [feat("c", "clip", input="x", **clip_bounds(src))])


def spec_log1p(src: Source) -> Spec:
    return wrap({"x": numeric_input(src)}, [feat("l", "log1p", input="x")])


def spec_ratio(src: Source) -> Spec:
    inputs = {"n": numeric_input(src), "d": numeric_input(src)}
    kw: dict[str, Any] = {}
    if src.integer(0, 2):
        kw["on_zero"] = spec_float(src)
    features = []
    numerator = "n"
    if src.integer(0, 2) == 0:  # a derived, non-output numerator
        features.append({**feat("n_clip", "clip", input="n", **clip_bounds(src)), "output": False})
        numerator = "n_clip"
    denominator = choice(src, ("d", "d", "n"))
    features.append(feat("r", "ratio", numerator=numerator, denominator=denominator, **kw))
    return wrap(inputs, features)


def spec_bucketize(src: Source) -> Spec:
    bounds = sorted({spec_float(src) for _ in range(src.integer(1, 6))})
    return wrap({"x": numeric_input(src)}, [feat("b", "bucketize", input="x", boundaries=bounds)])


def spec_missing_indicator(src: Source) -> Spec:
    return wrap({"x": numeric_input(src)}, [feat("m", "missing_indicator", input="x")])


def spec_ordinal(src: Source) -> Spec:
    mapping = {c: spec_float(src) for c in categories(src)}
    unknown = choice(src, ("error", "missing"))
    return wrap(
        {"c": categorical_input(src, list(mapping))},
        [feat("o", "ordinal", input="c", mapping=mapping, unknown=unknown)],
    )


def spec_one_hot(src: Source) -> Spec:
    cats = categories(src)
    unknown = choice(src, ("error", "missing"))
    return wrap(
        {"c": categorical_input(src, cats)},
        [feat("h", "one_hot", input="c", categories=cats, unknown=unknown)],
    )


def spec_mixed(src: Source) -> Spec:
    """Every op in one plan: derived operands, two features on one categorical input."""
    cats = categories(src)
    inputs = {
        "x": numeric_input(src),
        "y": numeric_input(src),
        "c": categorical_input(src, cats),
    }
    features = [
        feat("xv", "value", input="x"),
        {**feat("xc", "clip", input="x", **clip_bounds(src)), "output": src.integer(0, 1) == 1},
        feat("yl", "log1p", input="y"),
        feat("r", "ratio", numerator="xc", denominator="y", on_zero=spec_float(src)),
        feat("rr", "ratio", numerator="r", denominator="r"),
        feat("yb", "bucketize", input="y", boundaries=sorted({spec_float(src) for _ in range(3)})),
        feat("xm", "missing_indicator", input="x"),
        feat(
            "co",
            "ordinal",
            input="c",
            mapping={k: float(i) for i, k in enumerate(cats)},
            unknown=choice(src, ("error", "missing")),
        ),
        feat(
            "ch", "one_hot", input="c", categories=cats, unknown=choice(src, ("error", "missing"))
        ),
    ]
    return wrap(inputs, features)


SPEC_GENERATORS: dict[str, Callable[[Source], Spec]] = {
    "value": spec_value,
    "clip": spec_clip,
    "log1p": spec_log1p,
    "ratio": spec_ratio,
    "bucketize": spec_bucketize,
    "missing_indicator": spec_missing_indicator,
    "ordinal": spec_ordinal,
    "one_hot": spec_one_hot,
    "mixed": spec_mixed,
}


# --------------------------------------------------------------------------------------------
# Row generators.


def numeric_anchors(spec: Spec) -> list[float]:
    """Spec numbers worth hitting exactly (and just beside): clip bounds and bucket boundaries."""
    out: list[float] = []
    for f in spec["features"]:
        out.extend(v for k in ("min", "max") if (v := f.get(k)) is not None)
        out.extend(f.get("boundaries") or [])
    return out


def numeric_value(src: Source, d: dict[str, Any], anchors: Sequence[float]) -> float | int | None:
    """A raw row value for one numeric input; ``None`` means absent (missing)."""
    kind = src.integer(0, 99)
    codes: list[float] = d.get("missing_codes", [])
    if kind < 12:
        return None
    if kind < 22 and codes:
        return choice(src, codes)
    if kind < 40:
        lo, hi = d.get("range") or (None, None)
        points = [p for p in (lo, hi, *anchors) if p is not None] or [0.0]
        p = choice(src, points)
        return choice(
            src, (p, p, float(np.nextafter(p, -math.inf)), float(np.nextafter(p, math.inf)))
        )
    if kind < 52:
        return choice(src, EXTREMES)
    if kind < 75:
        x = src.integer(-5, 200)
        return x if src.integer(0, 1) else float(x)  # the row path accepts Python ints too
    if kind < 82:
        return src.integer(-5, 200) + 0.5
    return src.real()


def categorical_value(src: Source, known: Sequence[str]) -> str | None:
    kind = src.integer(0, 99)
    if kind < 12:
        return None
    if kind < 18:
        return ""  # empty string = missing on both paths
    if kind < 75:
        return choice(src, known)
    if kind < 85:
        return choice(
            src, ("never-listed", " ", "A" if "A" not in known else "a ", known[0].upper())
        )
    return src.text()


def known_categories(spec: Spec) -> list[str]:
    out: list[str] = []
    for f in spec["features"]:
        out.extend(f.get("categories") or list((f.get("mapping") or {}).keys()))
    return out or ["a"]


def gen_rows(src: Source, spec: Spec, n: int) -> list[Row]:
    anchors = numeric_anchors(spec)
    known = known_categories(spec)
    rows: list[Row] = []
    for _ in range(n):
        num: NumericRow = {}
        cat: CategoricalRow = {}
        for name, d in spec["inputs"].items():
            if d["type"] == "categorical":
                c = categorical_value(src, known)
                if c is not None:
                    cat[name] = c
            else:
                v = numeric_value(src, d, anchors)
                if v is not None:
                    num[name] = v
        rows.append((num, cat))
    return rows


# --------------------------------------------------------------------------------------------
# Python reference of the spec semantics.


def to_output(x: float) -> float:
    if math.isnan(x):
        return NAN
    if x >= F32_MAX:
        return F32_MAX
    if x <= -F32_MAX:
        return -F32_MAX
    return float(np.float32(x))


@dataclass
class Expected:
    values: list[float]
    bad: dict[str, str] = field(default_factory=dict)
    """field -> the start of its violation description."""


def reference(spec: Spec, row: Row) -> Expected:
    num, cat = row
    bad: dict[str, str] = {}
    slots: dict[str, float] = {}
    cats: dict[str, str | None] = {}
    for name, d in spec["inputs"].items():
        if d["type"] == "categorical":
            fld = f"categorical.{name}"
            c = cat.get(name)
            if c is None or c == "":
                if d.get("required", True):
                    bad[fld] = "required feature is missing"
                    c = None
                else:
                    c = d.get("impute")
            cats[name] = c
            continue
        fld = f"numeric.{name}"
        raw = num.get(name)
        value: float | None
        if raw is None:
            if d.get("required", True):
                bad[fld] = "required feature is missing"
                slots[name] = NAN
                continue
            value = None
        else:
            x = float(raw)
            lo, hi = d.get("range") or (None, None)
            if not math.isfinite(x):
                bad[fld] = "must be a finite number"
                value = NAN
            elif x in d.get("missing_codes", []):
                value = None
            elif d["type"] == "integer" and not x.is_integer():
                bad[fld] = "must be an integer"
                value = NAN
            elif (lo is not None and x < lo) or (hi is not None and x > hi):
                bad[fld] = "value "  # "value <x> is outside the allowed range [...]"
                value = NAN
            else:
                value = x
        if value is None:
            imp = d.get("impute")
            value = NAN if imp is None else float(imp)
        slots[name] = value

    derived: dict[str, float] = {}

    def operand(name: str) -> float:
        return slots[name] if name in slots else derived[name]

    outputs: list[float] = []
    for f in spec["features"]:
        op = f["op"]
        cols: list[float]
        if op == "value":
            cols = [operand(f["input"])]
        elif op == "clip":
            x = operand(f["input"])
            if not math.isnan(x):
                if f.get("min") is not None and x < f["min"]:
                    x = f["min"]
                if f.get("max") is not None and x > f["max"]:
                    x = f["max"]
            cols = [x]
        elif op == "log1p":
            x = operand(f["input"])
            cols = [x if math.isnan(x) else math.log1p(max(x, 0.0))]
        elif op == "ratio":
            a, b = operand(f["numerator"]), operand(f["denominator"])
            if math.isnan(a) or math.isnan(b):
                cols = [NAN]
            elif b == 0.0:
                cols = [NAN if f.get("on_zero") is None else float(f["on_zero"])]
            else:
                with np.errstate(all="ignore"):
                    cols = [float(np.float64(a) / np.float64(b))]
        elif op == "bucketize":
            x = operand(f["input"])
            cols = [x if math.isnan(x) else float(sum(1 for b in f["boundaries"] if b <= x))]
        elif op == "missing_indicator":
            cols = [1.0 if math.isnan(operand(f["input"])) else 0.0]
        elif op in ("ordinal", "one_hot"):
            c = cats[f["input"]]
            keys = list(f["mapping"]) if op == "ordinal" else f["categories"]
            if c is not None and c not in keys and f.get("unknown", "error") == "error":
                bad.setdefault(f"categorical.{f['input']}", "unknown category")
            if op == "ordinal":
                cols = [f["mapping"][c] if c in keys else NAN]
            else:
                cols = [1.0 if c == k else 0.0 for k in keys]
        else:  # pragma: no cover
            raise AssertionError(op)
        if op != "one_hot":
            derived[f["name"]] = cols[0]
        if f.get("output", True):
            outputs.extend(cols)
    values = [NAN] * len(outputs) if bad else [to_output(v) for v in outputs]
    return Expected(values, bad)


# --------------------------------------------------------------------------------------------
# The parity harness.


@dataclass
class Stats:
    rows: int = 0
    good: int = 0
    bad: int = 0
    missing_cells: int = 0
    unknown_categories: int = 0
    capped_columns: int = 0

    def __iadd__(self, other: Stats) -> Stats:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        return self


def bits(a: npt.NDArray[np.float32]) -> npt.NDArray[np.uint32]:
    assert a.dtype == np.float32
    return a.view(np.uint32)


def assert_nan_or_finite(a: npt.NDArray[np.float32]) -> None:
    assert not np.isinf(a).any(), a


def columns_of(
    spec: Spec, rows: Sequence[Row], omit_empty_optional: bool
) -> tuple[dict[str, npt.NDArray[np.float64]], dict[str, list[str | None]]]:
    numeric: dict[str, npt.NDArray[np.float64]] = {}
    categorical: dict[str, list[str | None]] = {}
    for j, (name, d) in enumerate(spec["inputs"].items()):
        present = [name in (cat if d["type"] == "categorical" else num) for num, cat in rows]
        if omit_empty_optional and not any(present) and not d.get("required", True):
            continue  # a column that is not there at all = all missing
        if d["type"] == "categorical":
            categorical[name] = [cat.get(name) for _, cat in rows]
            continue
        col = np.array([float(num.get(name, NAN)) for num, _ in rows], dtype=np.float64)
        u = col.view(np.uint64)
        for i, p in enumerate(present):
            if not p:
                u[i] = NAN_PATTERNS[(i + j) % len(NAN_PATTERNS)]
        numeric[name] = col
    return numeric, categorical


def expected_column_violations(
    row_violations: Sequence[Sequence[tuple[str, str]]],
) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    per_column: Counter[str] = Counter()
    for i, viols in enumerate(row_violations):
        for fld, desc in viols:
            column = fld.split(".", 1)[1]
            per_column[column] += 1
            if per_column[column] <= MAX_COLUMN_VIOLATIONS:
                out[(column, f"row {i}: {desc}")] += 1
    for column, n in per_column.items():
        if n > MAX_COLUMN_VIOLATIONS:
            out[(column, f"{n} bad rows in all (first {MAX_COLUMN_VIOLATIONS} listed)")] += 1
    return out


def run_case(spec: Spec, rows: Sequence[Row]) -> Stats:
    pipe = FeaturePipeline(parse_spec(spec))
    k = pipe.n_features
    stats = Stats(rows=len(rows))

    # Row path, one row at a time, against the reference.
    vectors: list[npt.NDArray[np.float32]] = []
    violations: list[list[tuple[str, str]]] = []
    for row in rows:
        exp = reference(spec, row)
        vec, viol = pipe.transform_row(*row)
        assert vec.dtype == np.float32
        assert vec.shape == (k,)
        assert_nan_or_finite(vec)
        fields = [f for f, _ in viol]
        assert len(fields) == len(set(fields)), (row, viol)
        assert set(fields) == set(exp.bad), (spec, row, viol, exp.bad)
        for f, desc in viol:
            assert desc.startswith(exp.bad[f]), (row, f, desc)
        if viol:
            assert np.isnan(vec).all(), (row, vec)
            stats.bad += 1
        else:
            stats.good += 1
        assert len(exp.values) == k
        np.testing.assert_array_equal(
            vec, np.array(exp.values, dtype=np.float32), err_msg=f"{spec}\n{row}"
        )
        vectors.append(vec)
        violations.append(list(viol))
        num, cat = row
        stats.missing_cells += sum(
            (n not in (cat if d["type"] == "categorical" else num))
            or (d["type"] == "categorical" and cat.get(n) == "")
            for n, d in spec["inputs"].items()
        )
        stats.unknown_categories += any(
            f.startswith("categorical.") and d.startswith("unknown category") for f, d in viol
        )

    stacked = np.stack(vectors) if vectors else np.empty((0, k), dtype=np.float32)

    # Micro-batch row path = stacked single rows.
    matrix, batch_violations = pipe.transform_rows(list(rows))
    assert matrix.shape == (len(rows), k)
    np.testing.assert_array_equal(bits(matrix), bits(stacked), err_msg=f"{spec}")
    assert [list(v) for v in batch_violations] == violations

    # Column path over the whole batch.
    omit = len(rows) % 2 == 0
    numeric, categorical = columns_of(spec, rows, omit)
    expected_errors = expected_column_violations(violations)
    stats.capped_columns += sum(1 for (_, d) in expected_errors if "bad rows in all" in d)
    if stats.bad:
        with pytest.raises(FeatureError) as info:
            pipe.transform_columns(numeric, categorical, len(rows))
        assert Counter(feature_error_violations(info.value)) == expected_errors, (spec, rows)
    else:
        out = pipe.transform_columns(numeric, categorical, len(rows))
        assert out.dtype == np.float32
        assert_nan_or_finite(out)
        np.testing.assert_array_equal(bits(out), bits(stacked), err_msg=f"{spec}\n{rows}")

    # Column path over the good rows only: bit-for-bit the row path.
    good = [i for i, v in enumerate(violations) if not v]
    numeric, categorical = columns_of(spec, [rows[i] for i in good], omit)
    out = pipe.transform_columns(numeric, categorical, len(good))
    assert out.shape == (len(good), k)
    assert_nan_or_finite(out)
    np.testing.assert_array_equal(bits(out), bits(stacked[good]), err_msg=f"{spec}")

    # Each bad row alone: FeatureError naming the same fields and problems, as row 0.
    for i, viol in enumerate(violations):
        if not viol:
            continue
        numeric, categorical = columns_of(spec, [rows[i]], False)
        with pytest.raises(FeatureError) as info:
            pipe.transform_columns(numeric, categorical, 1)
        assert Counter(feature_error_violations(info.value)) == expected_column_violations([viol])
    return stats


# --------------------------------------------------------------------------------------------
# One test per operation (plus one plan mixing them all).

RNG_SPECS = 8
RNG_ROWS_PER_SPEC = 130  # 8 x 130 = 1,040 deterministic rows per op
HYPOTHESIS_EXAMPLES = 100
MIN_ROWS = 1000


@pytest.mark.parametrize("op", list(SPEC_GENERATORS))
def test_column_and_row_paths_agree(op: str) -> None:
    make_spec = SPEC_GENERATORS[op]

    # Deterministic batch first: it alone guarantees the row count, and fails fast.
    det = Stats()
    for seed in range(RNG_SPECS):
        src = RngSource(seed * 1009 + len(op))
        spec = make_spec(src)
        det += run_case(spec, gen_rows(src, spec, RNG_ROWS_PER_SPEC))

    hyp = Stats()

    # No shrink phase: one example is a whole batch through four call paths, so shrinking runs
    # into Hypothesis's 5-minute limit; the assertion messages carry the spec and the row instead.
    @settings(
        max_examples=HYPOTHESIS_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def check(data: st.DataObject) -> None:
        src = HypothesisSource(data)
        spec = make_spec(src)
        rows = gen_rows(src, spec, src.integer(1, 40))
        nonlocal hyp
        hyp += run_case(spec, rows)

    check()

    assert hyp.rows > 0
    assert det.rows >= MIN_ROWS, det
    assert hyp.rows + det.rows >= MIN_ROWS
    # The deterministic batch really exercises both outcomes and the missing cells.
    assert det.good >= det.rows // 10, det
    assert det.bad >= det.rows // 20, det
    assert det.missing_cells >= det.rows // 10, det
    if op in ("ordinal", "one_hot", "mixed"):
        assert det.unknown_categories > 0, det


# --------------------------------------------------------------------------------------------
# Targeted checks.


def _pipe(inputs: dict[str, Any], features: list[dict[str, Any]]) -> FeaturePipeline:
    return FeaturePipeline(parse_spec(wrap(inputs, features)))


def test_nan_is_missing_on_columns_but_a_violation_on_rows() -> None:
    p = _pipe(
        {"x": {"type": "number", "required": False}}, [feat("m", "missing_indicator", input="x")]
    )
    vec, viol = p.transform_row({"x": NAN}, {})
    assert viol == [("numeric.x", "must be a finite number, got NaN")]
    assert np.isnan(vec).all()
    out = p.transform_columns({"x": np.array([NAN, 1.0])}, {}, 2)
    np.testing.assert_array_equal(out, np.array([[1.0], [0.0]], dtype=np.float32))
    assert p.transform_row({}, {})[0].tolist() == [1.0]


def test_row_path_only_violations() -> None:
    p = _pipe(
        {"x": {"type": "number"}, "c": {"type": "categorical", "required": False}},
        [feat("v", "value", input="x"), feat("h", "one_hot", input="c", categories=["a"])],
    )
    _, viol = p.transform_row({"x": 1.0, "zz": 2.0}, {"x": "a", "c": 3})  # type: ignore[dict-item]
    assert dict(viol) == {
        "numeric.zz": "unknown feature",
        "categorical.x": 'wrong type: "x" is numeric; send it in the numeric map',
        "categorical.c": "wrong type: must be a string",
    }
    _, viol = p.transform_row({"c": 1.0}, {})
    fields = [f for f, _ in viol]
    assert fields == ["numeric.c", "numeric.x"]  # misplaced c, missing required x
    _, viol = p.transform_row({"x": None}, {})  # type: ignore[dict-item]
    assert viol == [("numeric.x", "wrong type: must be a number")]  # reported once


def test_column_path_whole_column_problems() -> None:
    p = _pipe(
        {"x": {"type": "number"}, "c": {"type": "categorical"}},
        [feat("v", "value", input="x"), feat("h", "one_hot", input="c", categories=["a"])],
    )
    with pytest.raises(FeatureError) as info:
        p.transform_columns({"zz": np.zeros(1), "c": np.zeros(1)}, {}, 1)
    assert set(feature_error_violations(info.value)) == {
        ("x", "required column is missing"),
        ("c", "required column is missing"),
        ("zz", "not an input of this spec"),
        ("c", "wrong type for this input"),
    }
    with pytest.raises(ValueError, match="rows"):
        p.transform_columns({"x": np.zeros(3)}, {"c": ["a", "a"]}, 2)


def test_column_violations_are_capped_per_column() -> None:
    p = _pipe({"x": {"type": "integer", "range": [0, 10]}}, [feat("v", "value", input="x")])
    col = np.full(50, 11.0)
    col[::2] = 0.5
    with pytest.raises(FeatureError) as info:
        p.transform_columns({"x": col}, {}, 50)
    viol = feature_error_violations(info.value)
    assert len(viol) == MAX_COLUMN_VIOLATIONS + 1
    assert viol[0] == ("x", "row 0: must be an integer, got 0.5")
    assert viol[1] == ("x", "row 1: value 11 is outside the allowed range [0, 10]")
    assert viol[-1] == ("x", "50 bad rows in all (first 20 listed)")


def test_saturation_and_subnormals() -> None:
    p = _pipe(
        {"x": {"type": "number"}, "y": {"type": "number"}},
        [feat("v", "value", input="x"), feat("r", "ratio", numerator="x", denominator="y")],
    )
    cases = [
        (1e308, 1e-308, F32_MAX, F32_MAX),
        (-1e308, 1e-308, -F32_MAX, -F32_MAX),
        (5e-324, 1.0, 0.0, 0.0),
        (3.4028235677973366e38, 1.0, F32_MAX, F32_MAX),
        (1.0, 0.0, 1.0, NAN),
        (-0.0, 1.0, -0.0, -0.0),
    ]
    for x, y, v, r in cases:
        vec, viol = p.transform_row({"x": x, "y": y}, {})
        assert viol == []
        np.testing.assert_array_equal(vec, np.array([v, r], dtype=np.float32))
        assert np.signbit(vec[0]) == np.signbit(np.float32(v))
        out = p.transform_columns({"x": np.array([x]), "y": np.array([y])}, {}, 1)
        np.testing.assert_array_equal(bits(out[0]), bits(vec))


def test_column_violation_names_dotted_input() -> None:
    p = _pipe({"a.b": {"type": "number", "range": [0, 1]}}, [feat("v", "value", input="a.b")])
    assert p.transform_row({"a.b": 5.0}, {})[1] == [
        ("numeric.a.b", "value 5 is outside the allowed range [0, 1]")
    ]
    with pytest.raises(FeatureError) as info:
        p.transform_columns({"a.b": np.array([5.0])}, {}, 1)
    assert feature_error_violations(info.value) == [
        ("a.b", "row 0: value 5 is outside the allowed range [0, 1]")
    ]
