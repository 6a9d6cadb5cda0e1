"""The expectation suites: what raw and cleaned transactions must look like.

Thresholds come from :class:`zmlops.settings.ValidationSettings`; the time window from
the snapshot's ``as_of`` date (never the wall clock), the row-count band from the
current good version. The suites run on Great Expectations' SQL datasource over DuckDB
(:mod:`training.validation.gate`): column types are DuckDB's, and a pattern is checked by
a query for the lines that do not match it (GX has no regular expressions for DuckDB).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import great_expectations.expectations as gxe
from great_expectations.expectations.expectation import Expectation

from training.data.categories import CATEGORIES
from training.data.schema import CLEAN_SCHEMA, PRODUCT_CODE_PATTERN, RAW_COLUMNS
from zmlops.settings import ValidationSettings

__all__ = ["SuiteContext", "raw_suite", "clean_suite", "RAW_TYPES"]

# The raw numeric columns' DuckDB types (the adapter rounds whole-number floats to BIGINT)
RAW_TYPES: dict[str, tuple[str, ...]] = {"Quantity": ("BIGINT", "INTEGER"), "Price": ("DOUBLE", "FLOAT"),
                                         "Customer ID": ("BIGINT", "INTEGER")}


@dataclass(frozen=True)
class SuiteContext:
    """What a suite needs to know beyond the data: thresholds, as-of date, previous size."""

    thresholds: ValidationSettings
    as_of: dt.date
    previous_rows: int | None = None

    @property
    def newest_allowed(self) -> dt.datetime:
        return dt.datetime.combine(self.as_of, dt.time(23, 59, 59))

    @property
    def oldest_allowed(self) -> dt.datetime:
        return dt.datetime.combine(self.as_of - dt.timedelta(days=self.thresholds.max_history_days), dt.time())

    @property
    def freshest_required(self) -> dt.datetime:
        return dt.datetime.combine(self.as_of - dt.timedelta(days=self.thresholds.freshness_days), dt.time())


def _row_count(ctx: SuiteContext) -> list[Expectation]:
    if not ctx.previous_rows:
        return [gxe.ExpectTableRowCountToBeBetween(min_value=1)]
    change = ctx.thresholds.max_row_count_change
    return [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=int(ctx.previous_rows * (1 - change)), max_value=int(ctx.previous_rows * (1 + change))
        )
    ]


def _matches(column: str, pattern: str) -> Expectation:
    """Every non-null value of ``column`` matches ``pattern`` (RE2, anchored by the pattern itself)."""
    quoted = '"' + column.replace('"', '""') + '"'
    regex = pattern.replace("'", "''").replace("{", "{{").replace("}", "}}")
    return gxe.UnexpectedRowsExpectation(
        unexpected_rows_query=f"SELECT {quoted} FROM {{batch}} WHERE NOT regexp_full_match({quoted}, '{regex}')",
        description=f"{column} matches {pattern}", meta={"column": column})


def _dates(column: str, ctx: SuiteContext) -> list[Expectation]:
    return [
        gxe.ExpectColumnValuesToNotBeNull(column=column),
        gxe.ExpectColumnValuesToBeBetween(column=column, min_value=ctx.oldest_allowed, max_value=ctx.newest_allowed),
        gxe.ExpectColumnMaxToBeBetween(column=column, min_value=ctx.freshest_required, max_value=ctx.newest_allowed),
    ]


def raw_suite(ctx: SuiteContext, columns: Mapping[str, str] | Collection[str] = RAW_COLUMNS) -> list[Expectation]:
    """Raw snapshot (``InvoiceDate`` parsed to datetimes first; unparseable dates become nulls). Expectations on a
    column the snapshot lacks are left out: the column-set expectation names what is missing, once; a numeric
    column of another type (``columns`` as name -> DuckDB type) keeps only its type expectation, which names it."""
    t = ctx.thresholds
    not_null = ("Invoice", "StockCode", "Quantity", "Price", "Country")
    suite = [
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in not_null),
        gxe.ExpectColumnValuesToNotBeNull(column="Description", mostly=1 - t.max_description_null_share),
        gxe.ExpectColumnValuesToNotBeNull(column="Customer ID", mostly=1 - t.max_customer_null_share),
        *(gxe.ExpectColumnValuesToBeInTypeList(column=c, type_list=list(kinds)) for c, kinds in RAW_TYPES.items()),
        _matches("Invoice", r"^[CA]?\d{6,8}$"),
        _matches("StockCode", r"^[A-Za-z0-9][A-Za-z0-9_ ]*$"),
        gxe.ExpectColumnValuesToBeBetween(
            column="Quantity", min_value=-t.max_abs_quantity, max_value=t.max_abs_quantity
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="Price", min_value=0, max_value=t.max_price, mostly=t.negative_price_mostly
        ),
        *_dates("InvoiceDate", ctx),
    ]
    present = set(columns)
    types = dict(columns) if isinstance(columns, Mapping) else {}
    mistyped = {c for c, kinds in RAW_TYPES.items() if c in types and types[c] not in kinds}
    kept = [e for e in suite if _column(e) in present and
            (_column(e) not in mistyped or isinstance(e, gxe.ExpectColumnValuesToBeInTypeList))]
    return [gxe.ExpectTableColumnsToMatchSet(column_set=list(RAW_COLUMNS), exact_match=True), *_row_count(ctx), *kept]


def _column(expectation: Expectation) -> str | None:
    """The column an expectation is about (a query's is in its ``meta``)."""
    return getattr(expectation, "column", None) or (expectation.meta or {}).get("column")


def clean_suite(ctx: SuiteContext) -> list[Expectation]:
    """The cleaned table: typed, positive, categorised, no nulls."""
    t = ctx.thresholds
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(CLEAN_SCHEMA.names), exact_match=True),
        *_row_count(ctx),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in CLEAN_SCHEMA.names),
        _matches("invoice", r"^\d{6,8}$"),
        _matches("stock_code", PRODUCT_CODE_PATTERN),
        gxe.ExpectColumnValuesToBeBetween(column="quantity", min_value=1, max_value=t.max_abs_quantity),
        gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, strict_min=True, max_value=t.max_price),
        gxe.ExpectColumnValuesToBeBetween(column="revenue", min_value=0, strict_min=True),
        gxe.ExpectColumnValuesToBeInSet(column="category", value_set=list(CATEGORIES)),
        *_dates("invoice_ts", ctx),
    ]
