"""Entity features from history tables, point in time, with Polars (lazy).

For every application row (entity key + ``as_of`` day), each ``entity.features`` entry aggregates
the entity's events that happened strictly before ``as_of`` (and within ``window_days`` when set):
``count`` (0 without events), ``sum``, ``mean``, ``min``, ``max``, ``rate`` (share of events with
``column > above``) — or reads a static ``attribute`` (first row per entity). Events at or after the
application date never count: no leakage. The same function serves publishing, with ``as_of`` the
publish date for every entity.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from feature_kernels import EntityDef, HistoryTable

__all__ = ["day_number", "entity_features", "read_table"]

_ROW = "__row"
_AS_OF = "__as_of"
_KEY = "__key"


def day_number(column: str) -> pl.Expr:
    """A date/datetime string column as fractional days since 1970-01-01 (null stays null)."""
    parsed = pl.col(column).cast(pl.String).str.to_datetime(strict=False, time_unit="us")
    return (parsed.dt.epoch("us").cast(pl.Float64) / 86_400_000_000.0).alias(column)


def read_table(path: Path, dates: list[str], separator: str = ",") -> pl.LazyFrame:
    """Scan a CSV and read its ``dates`` as day numbers."""
    if not path.is_file():
        raise FileNotFoundError(f"history table not found: {path}")
    lf = pl.scan_csv(path, separator=separator, null_values=["NA", ""], infer_schema_length=10000)
    return lf.with_columns([day_number(c) for c in dates]) if dates else lf


def _events(table: HistoryTable, folder: Path) -> pl.LazyFrame:
    lf = read_table(folder / table.file, table.dates)
    derived = [
        (pl.col(d.end) - pl.col(d.start)).alias(name)
        for name, d in table.derive.items()
        if d.op == "days_between"
    ]
    lf = lf.with_columns(derived) if derived else lf
    return lf.with_columns(pl.col(table.key).cast(pl.String).alias(_KEY))


def _agg(agg: str, column: str | None, above: float, name: str) -> pl.Expr:
    if agg == "count":
        return pl.len().cast(pl.Float64).alias(name)
    assert column is not None
    col = pl.col(column).cast(pl.Float64)
    match agg:
        case "sum":
            return col.sum().alias(name)
        case "mean":
            return col.mean().alias(name)
        case "min":
            return col.min().alias(name)
        case "max":
            return col.max().alias(name)
        case "rate":
            return (col > above).cast(pl.Float64).mean().alias(name)
    raise ValueError(f"unknown aggregation {agg!r}")


def entity_features(
    keys: pl.Series, as_of: pl.Series, entity: EntityDef, folder: Path
) -> pl.DataFrame:
    """One row per (key, as_of) pair, in the same order: the entity features, named as the spec's
    entity inputs. ``as_of`` is in day numbers; ``folder`` holds the history tables."""
    base = pl.DataFrame(
        {_KEY: keys.cast(pl.String), _AS_OF: as_of.cast(pl.Float64)}
    ).with_row_index(_ROW)
    out = base.lazy()
    by_table: dict[tuple[str, float | None], list[pl.Expr]] = {}
    attributes: dict[str, list[pl.Expr]] = {}
    counts: list[str] = []
    for f in entity.features:
        table = entity.tables[f.table]
        if f.agg == "attribute":
            assert f.column is not None
            attributes.setdefault(f.table, []).append(pl.col(f.column).first().alias(f.name))
            continue
        by_table.setdefault((f.table, f.window_days), []).append(
            _agg(f.agg, f.column, f.above, f.name)
        )
        if f.agg == "count":
            counts.append(f.name)
    for (tname, window), exprs in by_table.items():
        table = entity.tables[tname]
        assert table.time is not None
        events = _events(table, folder)
        joined = base.lazy().join(events, on=_KEY, how="inner")
        point_in_time = pl.col(table.time) < pl.col(_AS_OF)
        if window is not None:
            point_in_time &= pl.col(table.time) >= pl.col(_AS_OF) - window
        aggregated = joined.filter(point_in_time).group_by(_ROW).agg(exprs)
        out = out.join(aggregated, on=_ROW, how="left")
    for tname, exprs in attributes.items():
        table = entity.tables[tname]
        static = _events(table, folder).group_by(_KEY, maintain_order=True).agg(exprs)
        out = out.join(static, on=_KEY, how="left")
    result = out.sort(_ROW).collect()
    if counts:
        result = result.with_columns([pl.col(c).fill_null(0.0) for c in counts])
    return result.select([f.name for f in entity.features])
