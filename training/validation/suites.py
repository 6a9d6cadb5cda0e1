"""The expectation suites: what raw and cleaned transactions must look like.

Thresholds come from :class:`zmlops.settings.ValidationSettings`; the time window from
the snapshot's ``as_of`` date (never the wall clock), the row-count band from the
current good version.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

import great_expectations.expectations as gxe
from great_expectations.expectations.expectation import Expectation

from training.data.categories import CATEGORIES
from training.data.schema import CLEAN_SCHEMA, PRODUCT_CODE_PATTERN, RAW_COLUMNS
from zmlops.settings import ValidationSettings

__all__ = ["SuiteContext", "raw_suite", "clean_suite"]


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


def _dates(column: str, ctx: SuiteContext) -> list[Expectation]:
    return [
        gxe.ExpectColumnValuesToNotBeNull(column=column),
        gxe.ExpectColumnValuesToBeBetween(column=column, min_value=ctx.oldest_allowed, max_value=ctx.newest_allowed),
        gxe.ExpectColumnMaxToBeBetween(column=column, min_value=ctx.freshest_required, max_value=ctx.newest_allowed),
    ]


def raw_suite(ctx: SuiteContext, columns: Collection[str] = RAW_COLUMNS) -> list[Expectation]:
    """Raw snapshot (``InvoiceDate`` parsed to datetimes first; unparseable dates become nulls). Expectations on a
    column the snapshot lacks are left out: the column-set expectation names what is missing, once."""
    t = ctx.thresholds
    not_null = ("Invoice", "StockCode", "Quantity", "Price", "Country")
    suite = [
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in not_null),
        gxe.ExpectColumnValuesToNotBeNull(column="Description", mostly=1 - t.max_description_null_share),
        gxe.ExpectColumnValuesToNotBeNull(column="Customer ID", mostly=1 - t.max_customer_null_share),
        gxe.ExpectColumnValuesToBeInTypeList(
            column="Quantity", type_list=["int64", "int32", "Int64Dtype", "Int32Dtype"]
        ),
        gxe.ExpectColumnValuesToBeInTypeList(column="Price", type_list=["float64", "float32", "Float64Dtype"]),
        gxe.ExpectColumnValuesToBeInTypeList(column="Customer ID", type_list=["int64", "Int64Dtype", "float64"]),
        gxe.ExpectColumnValuesToMatchRegex(column="Invoice", regex=r"^[CA]?\d{6,8}$"),
        gxe.ExpectColumnValuesToMatchRegex(column="StockCode", regex=r"^[A-Za-z0-9][A-Za-z0-9_ ]*$"),
        gxe.ExpectColumnValuesToBeBetween(
            column="Quantity", min_value=-t.max_abs_quantity, max_value=t.max_abs_quantity
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="Price", min_value=0, max_value=t.max_price, mostly=t.negative_price_mostly
        ),
        *_dates("InvoiceDate", ctx),
    ]
    present = set(columns)
    return [gxe.ExpectTableColumnsToMatchSet(column_set=list(RAW_COLUMNS), exact_match=True), *_row_count(ctx),
            *(e for e in suite if getattr(e, "column", None) in present)]


def clean_suite(ctx: SuiteContext) -> list[Expectation]:
    """The cleaned table: typed, positive, categorised, no nulls."""
    t = ctx.thresholds
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(CLEAN_SCHEMA.names), exact_match=True),
        *_row_count(ctx),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in CLEAN_SCHEMA.names),
        gxe.ExpectColumnValuesToMatchRegex(column="invoice", regex=r"^\d{6,8}$"),
        gxe.ExpectColumnValuesToMatchRegex(column="stock_code", regex=PRODUCT_CODE_PATTERN),
        gxe.ExpectColumnValuesToBeBetween(column="quantity", min_value=1, max_value=t.max_abs_quantity),
        gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, strict_min=True, max_value=t.max_price),
        gxe.ExpectColumnValuesToBeBetween(column="revenue", min_value=0, strict_min=True),
        gxe.ExpectColumnValuesToBeInSet(column="category", value_set=list(CATEGORIES)),
        *_dates("invoice_ts", ctx),
    ]
