"""The Online Retail II transaction schema, shared by the simulator, the adapter and the gate."""

from __future__ import annotations

import pyarrow as pa

__all__ = ["RAW_COLUMNS", "RAW_SCHEMA", "CLEAN_SCHEMA", "PRODUCT_CODE_PATTERN", "NON_PRODUCT_CODES", "OLDER_NAMES",
           "SPELLINGS"]

RAW_SCHEMA = pa.schema(
    [
        ("Invoice", pa.string()),
        ("StockCode", pa.string()),
        ("Description", pa.string()),
        ("Quantity", pa.int64()),
        ("InvoiceDate", pa.string()),  # "YYYY-MM-DD HH:MM:SS", local time, as in the UCI file
        ("Price", pa.float64()),
        ("Customer ID", pa.int64()),
        ("Country", pa.string()),
    ]
)
RAW_COLUMNS: tuple[str, ...] = tuple(RAW_SCHEMA.names)

# The first UCI dataset (Online Retail, 2010-2011) spells three columns differently; the adapter reads both.
OLDER_NAMES = {"InvoiceNo": "Invoice", "UnitPrice": "Price", "CustomerID": "Customer ID"}
SPELLINGS = {
    "UCI Online Retail II": RAW_COLUMNS,
    "UCI Online Retail": tuple({v: k for k, v in OLDER_NAMES.items()}.get(c, c) for c in RAW_COLUMNS),
}

# The cleaned table: one row per sold product line, typed, with a derived category.
CLEAN_SCHEMA = pa.schema(
    [
        ("invoice", pa.string()),
        ("stock_code", pa.string()),
        ("description", pa.string()),
        ("quantity", pa.int64()),
        ("invoice_ts", pa.timestamp("s")),
        ("price", pa.float64()),
        ("customer_id", pa.int64()),
        ("country", pa.string()),
        ("category", pa.string()),
        ("revenue", pa.float64()),
    ]
)

# Products have five digits and an optional letter suffix (85123A, 15056BL); everything
# else (POST, DOT, M, BANK CHARGES, AMAZONFEE, C2, ADJUST, gift vouchers...) is not a product.
PRODUCT_CODE_PATTERN = r"^\d{5}[A-Za-z]{0,2}$"
NON_PRODUCT_CODES = ("POST", "DOT", "M", "BANK CHARGES", "AMAZONFEE", "D", "C2", "ADJUST")
