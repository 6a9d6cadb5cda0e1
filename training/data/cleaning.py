"""Read Online Retail II files (CSV, XLSX or Parquet) and derive the cleaned table.

The raw file is never modified. Cleaning applies the rules in :data:`DROP_RULES`
in order; the report counts, for each rule, the rows it flags on the raw table on
its own and the rows it actually drops after the earlier rules, so the numbers
add up to the total dropped. Simulated and real data take the same path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from training.data.categories import categorize_series
from training.data.schema import CLEAN_SCHEMA, OLDER_NAMES, PRODUCT_CODE_PATTERN, RAW_COLUMNS, SPELLINGS

__all__ = ["read_transactions", "clean_transactions", "CleaningReport", "DROP_RULES", "UnreadableInput"]


class UnreadableInput(ValueError):
    """The file cannot be read as Online Retail II transactions (the message says why)."""


def read_transactions(path: Path) -> pd.DataFrame:
    """Read a raw file into the raw schema's names and dtypes; columns missing from the file stay missing.

    Both UCI spellings are read (Online Retail II's ``Invoice``, ``Price``, ``Customer ID`` and the older
    Online Retail's ``InvoiceNo``, ``UnitPrice``, ``CustomerID``); ``frame.attrs["spelling"]`` says which the
    file used (None when it matches neither completely)."""
    suffix = path.suffix.lower()
    text = {"Invoice": str, "InvoiceNo": str, "StockCode": str, "Description": str}
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif suffix == ".csv":
        frame = pd.read_csv(path, dtype=text)
    elif suffix in (".xlsx", ".xls"):
        sheets = pd.read_excel(path, sheet_name=None, dtype={k: v for k, v in text.items() if k != "Description"})
        frame = pd.concat(sheets.values(), ignore_index=True)
    else:
        raise UnreadableInput(f"{path}: unsupported file type {suffix!r} (use .parquet, .csv or .xlsx)")
    return _normalise(_respelled(frame))


def _respelled(frame: pd.DataFrame) -> pd.DataFrame:
    """The older UCI names renamed to Online Retail II's (never over a column the file also has)."""
    columns = set(frame.columns)
    spelling = next((name for name, names in SPELLINGS.items() if set(names) <= columns), None)
    renames = {old: new for old, new in OLDER_NAMES.items() if old in columns and new not in columns}
    out = frame.rename(columns=renames) if renames else frame
    out.attrs["spelling"] = spelling
    return out


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Cast to the raw dtypes where the values allow it; leave the rest for the gate to report."""
    out = frame.copy()
    for col in ("Invoice", "StockCode", "Description", "Country"):
        if col in out and out[col].dtype != object:
            out[col] = out[col].astype(str)
    if "InvoiceDate" in out and pd.api.types.is_datetime64_any_dtype(out["InvoiceDate"]):
        out["InvoiceDate"] = out["InvoiceDate"].dt.strftime("%Y-%m-%d %H:%M:%S")
    for col in ("Quantity", "Customer ID"):
        if col in out and pd.api.types.is_numeric_dtype(out[col]):
            out[col] = pd.to_numeric(out[col]).round().astype("Int64")
    return out


Rule = Callable[[pd.DataFrame], pd.Series]

DROP_RULES: dict[str, tuple[str, Rule]] = {
    "cancellation": ("invoice starts with C", lambda d: d["Invoice"].str.startswith("C", na=False)),
    "non_product": (
        "stock code is not 5 digits plus an optional letter (POST, M, DOT, C2, ADJUST...)",
        lambda d: ~d["StockCode"].str.match(PRODUCT_CODE_PATTERN, na=False),
    ),
    "non_positive_quantity": ("quantity <= 0 (returns without a C invoice)", lambda d: ~(d["Quantity"] > 0)),
    "non_positive_price": ("price <= 0 (free samples, bad-debt adjustments)", lambda d: ~(d["Price"] > 0)),
    "missing_customer": ("customer id missing", lambda d: d["Customer ID"].isna()),
    "nan_description": (
        "description missing or the literal string 'nan'",
        lambda d: d["Description"].isna() | d["Description"].str.strip().str.lower().isin(["nan", ""]),
    ),
    "duplicate": ("exact duplicate of an earlier line", lambda d: d.duplicated(keep="first")),
}


@dataclass(frozen=True)
class CleaningReport:
    """Counts of one cleaning run (rows in, rows out, per rule flagged and dropped)."""

    rows_in: int
    rows_out: int
    flagged: dict[str, int]
    dropped: dict[str, int]
    category_counts: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return {
            "rows_in": self.rows_in, "rows_out": self.rows_out, "flagged": self.flagged,
            "dropped": self.dropped, "category_counts": self.category_counts,
            "rules": {k: v[0] for k, v in DROP_RULES.items()},
        }

    def lines(self) -> list[str]:
        width = max(len(k) for k in DROP_RULES)
        out = [f"{'rule':<{width}}  {'flagged':>9}  {'dropped':>9}"]
        out += [f"{k:<{width}}  {self.flagged[k]:>9,}  {self.dropped[k]:>9,}" for k in DROP_RULES]
        out.append(f"{'rows in / out':<{width}}  {self.rows_in:>9,}  {self.rows_out:>9,}")
        return out


def clean_transactions(raw: pd.DataFrame) -> tuple[pd.DataFrame, CleaningReport]:
    """The cleaned table (see :data:`~training.data.schema.CLEAN_SCHEMA`) and what was dropped."""
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise UnreadableInput(f"missing column(s): {', '.join(missing)}")
    flagged = {name: int(rule(raw).sum()) for name, (_, rule) in DROP_RULES.items()}
    dropped: dict[str, int] = {}
    keep = raw
    for name, (_, rule) in DROP_RULES.items():
        mask = rule(keep).to_numpy(dtype=bool)
        dropped[name] = int(mask.sum())
        keep = keep[~mask]
    clean = pd.DataFrame(
        {
            "invoice": keep["Invoice"].astype(str),
            "stock_code": keep["StockCode"].astype(str),
            "description": keep["Description"].astype(str).str.strip(),
            "quantity": keep["Quantity"].astype("int64"),
            "invoice_ts": pd.to_datetime(keep["InvoiceDate"], format="%Y-%m-%d %H:%M:%S").astype(
                "datetime64[s]"),
            "price": keep["Price"].astype("float64"),
            "customer_id": keep["Customer ID"].astype("int64"),
            "country": keep["Country"].astype(str),
        }
    ).reset_index(drop=True)
    clean["category"] = categorize_series(clean["description"]).astype(str)
    clean["revenue"] = (clean["quantity"] * clean["price"]).round(2)
    clean = clean[list(CLEAN_SCHEMA.names)]
    counts = clean["category"].value_counts().sort_index()
    report = CleaningReport(len(raw), len(clean), flagged, dropped, {str(k): int(v) for k, v in counts.items()})
    return clean, report
