"""Product recommendation: implicit ALS or EASE on customer x product purchases, with baselines.

The interaction weight is the number of distinct orders in which a customer bought a
product, scaled into ALS confidence ``1 + alpha * weight`` (``alpha`` chosen on a time
split). Recommendations exclude products the customer already bought. Customers the
model has not seen, or with fewer than ``min_orders`` orders, get the cold-start answer:
the most popular products among customers of the same country (global popularity when
the country is unknown or too small).

A second model, :class:`EASERecommender`, is Steck's closed-form item-item regression ("Embarrassingly Shallow
Autoencoders for Sparse Data", WWW 2019), scored on a customer's purchases weighted by how recent they are;
training chooses between the two by an inner time split (``training.trainers.choose_recommender``).

Baselines on the same split: :class:`PopularityRecommender` (recent popularity first) and implicit's item-item
nearest-neighbour models, cosine and BM25 (:class:`ItemKNNRecommender`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from training.models.derived import DerivedLookups

__all__ = [
    "ALSRecommender",
    "EASERecommender",
    "EASE_MAX_ITEMS",
    "PopularityRecommender",
    "ItemKNNRecommender",
    "interactions",
    "purchases",
    "PURCHASE_INPUTS",
    "top_unbought",
    "bought_bits",
    "time_split",
    "evaluate_recommender",
    "new_purchases",
    "ranked",
]

PURCHASE_INPUTS = ("invoice", "stock_code", "invoice_ts", "customer_id", "country")  # of the clean lines
SCORES_AT_ONCE = 2**22  # scores a batch ranking holds at a time (16 MB of float32): users per step = this / products
PAIRS_BUDGET_MB = 512  # DuckDB's memory while it groups purchases into pairs (the frames stay in pandas)


def purchases(lines: pd.DataFrame | Path, budget_mb: int = 1_024, threads: int = 0) -> pd.DataFrame:
    """The clean lines reduced to what the recommender learns from, by DuckDB within ``budget_mb`` (a file is read
    where it lies): one row per customer, product and day they bought it, with ``orders`` (distinct invoices),
    ``invoice_ts`` (the day's last) and the customer's ``country`` (that of their first line); products and
    countries categorical; in time order. :func:`interactions`, :func:`time_split` (its cutoff is a midnight) and
    :func:`evaluate_recommender` answer on it as on the lines, from a fraction of their memory."""
    from training.data.cleaning import customer_countries
    from training.data.lake import scratch, table_of

    with scratch(budget_mb, threads) as (con, _):
        source = table_of(con, lines[[*PURCHASE_INPUTS]] if isinstance(lines, pd.DataFrame) else lines)
        for name, column in (("product", "stock_code"), ("place", "country")):  # categoricals in pandas
            con.execute(f"CREATE TYPE {name} AS ENUM (SELECT DISTINCT {column} FROM {source} "
                        f"WHERE {column} IS NOT NULL ORDER BY 1)")
        low, high = con.execute(f"SELECT min(customer_id), max(customer_id) FROM {source}").fetchone() or (0, 0)
        small = -(2**31) <= (low or 0) and (high or 0) < 2**31  # 4 bytes a customer where the ids allow
        con.execute(f"CREATE TYPE customer AS {'INTEGER' if small else 'BIGINT'}")
        # an order's lines of one product counted once (an invoice is one moment, so lies within one day)
        bought: pd.DataFrame = con.sql(f"""
            WITH firsts AS ({customer_countries(source)}),
            orders AS (SELECT customer_id, stock_code, max(invoice_ts) AS ts FROM {source}
                       GROUP BY customer_id, stock_code, invoice)
            SELECT customer_id::customer AS customer_id, stock_code::product AS stock_code, max(ts) AS invoice_ts,
                   count(*)::INTEGER AS orders, any_value(firsts.country)::place AS country
            FROM orders JOIN firsts USING (customer_id)
            GROUP BY customer_id, stock_code, date_trunc('day', ts) ORDER BY invoice_ts""").df()
    return bought


def interactions(frame: pd.DataFrame, budget_mb: int = PAIRS_BUDGET_MB) -> pd.DataFrame:
    """(customer_id, stock_code, country, orders, last_ts): one row per customer-product pair, in that order, from
    the :func:`purchases` (or the clean lines, reduced to them first). DuckDB groups the frame where it lies (a
    third of pandas' memory at 28M purchases, and faster); a customer's country is the one of their purchases."""
    from training.data.lake import scratch

    bought = frame if "orders" in frame else purchases(frame, budget_mb)
    with scratch(budget_mb) as (con, _):
        con.register("bought", bought)
        pairs: pd.DataFrame = con.sql("""
            SELECT customer_id, stock_code, any_value(country) AS country, sum(orders)::INTEGER AS orders,
                   max(invoice_ts) AS last_ts
            FROM bought GROUP BY customer_id, stock_code ORDER BY customer_id, stock_code""").df()
    return pairs


def time_split(clean: pd.DataFrame, test_weeks: int = 8) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """Train on everything before the last ``test_weeks`` weeks, test on those weeks (slices, not copies, of a
    frame in time order such as :func:`purchases`)."""
    ts = clean["invoice_ts"]
    cutoff = ts.max().normalize() - pd.Timedelta(weeks=test_weeks) + pd.Timedelta(days=1)
    if ts.is_monotonic_increasing:
        at = int(ts.searchsorted(cutoff))
        return clean.iloc[:at], clean.iloc[at:], cutoff
    return clean[ts < cutoff], clean[ts >= cutoff], cutoff


class _Base(DerivedLookups, BaseEstimator):  # type: ignore[misc]
    """Index of customers and products, purchase matrix, popularity and the cold-start lists."""

    min_orders: int = 1
    # serving's lookups (DerivedLookups): built on first use or at load, per fit, never pickled
    _DERIVED: tuple[str, ...] = ("_position", "_codes", "_item_factors_t", "_bought_bits", "_ranking")

    def _fit_index(self, X: pd.DataFrame, recent: pd.Series | None = None) -> sp.csr_matrix:
        pairs = interactions(X) if "invoice_ts" in X else X  # lines or purchases; else already pairs
        return self._index(pairs, recent)[0]

    def _index(self, pairs: pd.DataFrame, recent: pd.Series | None = None,
               per_pair: np.ndarray | None = None) -> tuple[sp.csr_matrix, np.ndarray | None]:
        """The purchase matrix and the lookups of :meth:`_fit_index`, from the pairs; and ``per_pair`` (a value per
        row of ``pairs``, which holds each customer and product once) in the matrix's entry order."""
        self.forget_derived()
        rows, customers = pd.factorize(pairs["customer_id"], sort=True)
        cols, items = pd.factorize(pairs["stock_code"], sort=True)
        # 4-byte codes (scipy keeps them as the matrix's indices instead of copying): half the memory at 19M pairs
        rows, cols = rows.astype(np.int32), cols.astype(np.int32)
        rows_sorted = bool((rows[1:] >= rows[:-1]).all())  # as interactions() hands them over
        # plain labels, whether the column was categorical (purchases) or not
        self.customers_, self.items_ = pd.Index(customers), pd.Index(np.asarray(items, dtype=object))
        n_users, n_items = len(customers), len(items)
        orders = np.array(pairs["orders"], dtype=np.float32)  # the matrix's own (it keeps the array it is given)
        # each customer's first pair; with the pairs sorted by customer, where each customer's row starts
        first = (np.searchsorted(rows, np.arange(n_users + 1, dtype=np.int32)) if rows_sorted
                 else np.unique(rows, return_index=True)[1])
        m = None
        if rows_sorted:  # as interactions() hands them over: the matrix's own arrays, no sorting and no copy
            direct = sp.csr_matrix((orders, cols, first), shape=(n_users, n_items))
            if direct.has_canonical_format:  # products sorted within each customer, each once
                m = direct
        in_order = m is not None  # then the entries are in the pairs' order
        if m is None:
            m = sp.csr_matrix((orders, (rows, cols)), shape=(n_users, n_items))
            m.sum_duplicates()
        self.matrix_ = m
        aligned = None
        if per_pair is not None:
            if m.nnz != len(pairs):
                raise ValueError("per-pair values need one row per customer and product (interactions())")
            aligned = per_pair if in_order else per_pair[np.lexsort((cols, rows))]
        buyers = m.getnnz(axis=0).astype(float)  # customers per product
        if recent is not None:  # recent popularity first (Feast: customers in the last 4 weeks), then all-time
            lately = recent.reindex(self.items_).fillna(0.0).to_numpy(float)
            buyers = lately * (buyers.max() + 1) + buyers
        self.popular_ = np.argsort(-buyers, kind="stable")
        # each customer's country (first pair), then item popularity per country with >= 5 customers
        country_codes, labels = pd.factorize(pairs["country"], use_na_sentinel=False)
        country_codes = country_codes.astype(np.int32)
        countries = pd.Index(np.asarray(labels, dtype=object)).astype(str)
        user_country = country_codes[first[:n_users]]
        self.country_of_ = dict(zip(customers.tolist(), countries[user_country].tolist(), strict=True))
        counts = np.bincount(country_codes * np.int32(n_items) + cols, minlength=len(countries) * n_items)
        counts = counts.reshape(len(countries), n_items)
        big = np.nonzero(np.bincount(user_country, minlength=len(countries)) >= 5)[0]
        self.country_popular_: dict[str, np.ndarray] = {
            str(countries[int(c)]): np.argsort(-counts[c], kind="stable") for c in big
        }
        user_orders = np.asarray(m.max(axis=1).todense()).ravel()
        self.warm_ = user_orders >= self.min_orders
        return m, aligned

    def _cold(self, user: int | None, country: str | None, k: int) -> list[str]:
        ranking = self.country_popular_.get(str(country), self.popular_) if country else self.popular_
        bought = (
            set(self.matrix_.indices[self.matrix_.indptr[user] : self.matrix_.indptr[user + 1]])
            if user is not None
            else set()
        )
        picks = [i for i in ranking[: k + len(bought)] if i not in bought][:k]
        return [str(self.items_[i]) for i in picks]

    def _warm(self, users: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError

    def rank_all(self, depth: int, max_bytes: int) -> bool:
        """Rank every customer's top ``depth`` products once, into a table :meth:`recommend` then
        answers ``k <= depth`` from: the same answers (rows of :meth:`_warm`), the scoring moved
        from the request to the load. Kept among the derived lookups, so per fit and never
        pickled. Returns False, and keeps nothing, when the table (customers x depth, int16 ids
        while the catalogue allows) would take more than ``max_bytes``: 0.9 MB at depth 100 for
        Online Retail II 2009-2010's 4,312 customers, 20 MB for 100,000."""
        n_users, n_items = self.matrix_.shape
        depth = max(1, min(depth, n_items))
        dtype = np.int16 if n_items <= np.iinfo(np.int16).max else np.int32
        if n_users * depth * np.dtype(dtype).itemsize > max_bytes:
            return False

        def build() -> np.ndarray:
            table = np.empty((n_users, depth), dtype)
            step = max(1, SCORES_AT_ONCE // max(n_items, 1))
            for start in range(0, n_users, step):
                stop = min(start + step, n_users)
                table[start:stop] = self._warm(np.arange(start, stop), depth)
            return table

        self.derived("_ranking", build)
        return True

    def recommend(
        self, customer_ids: Sequence[Any], k: int = 10, countries: Sequence[str | None] | None = None
    ) -> list[tuple[list[str], bool]]:
        """Top-k stock codes per customer and whether the answer is the cold-start fallback."""
        # customer id -> row and the stock codes as a list, built on first use (a pandas indexer costs
        # ~0.1 ms a call, one item of an Index ~1 us)
        lookup = self.derived("_position", lambda: {c: i for i, c in enumerate(self.customers_.tolist())})
        codes: list[str] = self.derived("_codes", lambda: [str(x) for x in self.items_.tolist()])
        pos = [lookup.get(c, -1) for c in customer_ids]
        warm_ = self.warm_
        warm = [i for i, p in enumerate(pos) if p >= 0 and warm_[p]]
        out: list[tuple[list[str], bool]] = [([], True)] * len(pos)
        if warm:
            users = np.array([pos[i] for i in warm], dtype=np.int64)
            table = self.__dict__.get("_ranking")  # rank_all's table, when the server built one
            if table is not None and min(k, len(codes)) <= table.shape[1]:
                ids = table[users, :k].tolist()
            else:
                ids = self._warm(users, k).tolist()
            for i, row in zip(warm, ids, strict=True):
                out[i] = ([codes[x] for x in row if x >= 0], False)
        if len(warm) < len(pos):
            chosen = set(warm)
            for i, p in enumerate(pos):
                if i in chosen:
                    continue
                country = countries[i] if countries is not None else None
                user = p if p >= 0 else None
                country = country or (self.country_of_.get(customer_ids[i]) if user is not None else None)
                out[i] = (self._cold(user, country, k), True)
        return out

    def predict(self, X: pd.DataFrame) -> list[list[str]]:
        k = int(X["k"].iloc[0]) if "k" in X else 10
        countries = X["country"].tolist() if "country" in X else None
        return [r for r, _ in self.recommend(X["customer_id"].tolist(), k, countries)]


class PopularityRecommender(_Base):
    """Most-bought products overall, minus what the customer already bought."""

    def fit(self, X: pd.DataFrame, y: Any = None, recent: pd.Series | None = None) -> PopularityRecommender:
        self._fit_index(X, recent)
        return self

    def _warm(self, users: np.ndarray, k: int) -> np.ndarray:
        out = np.full((len(users), k), -1)
        for j, u in enumerate(users):
            bought = set(self.matrix_.indices[self.matrix_.indptr[u] : self.matrix_.indptr[u + 1]])
            picks = [i for i in self.popular_[: k + len(bought)] if i not in bought][:k]
            out[j, : len(picks)] = picks
        return out


class ItemKNNRecommender(_Base):
    """implicit's item-item nearest neighbours: cosine similarity, or BM25-weighted (``similarity="bm25"``)."""

    def __init__(self, neighbours: int = 50, similarity: str = "cosine") -> None:
        self.neighbours = neighbours
        self.similarity = similarity

    def fit(self, X: pd.DataFrame, y: Any = None, recent: pd.Series | None = None) -> ItemKNNRecommender:
        from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

        m = self._fit_index(X, recent)
        if self.similarity not in ("cosine", "bm25"):
            raise ValueError(f"similarity must be cosine or bm25, not {self.similarity!r}")
        self.model_ = CosineRecommender(K=self.neighbours) if self.similarity == "cosine" \
            else BM25Recommender(K=self.neighbours)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # implicit converts its own transposed input and says so
            self.model_.fit(m, show_progress=False)
        return self

    def _warm(self, users: np.ndarray, k: int) -> np.ndarray:
        ids, _ = self.model_.recommend(users, self.matrix_[users], N=k, filter_already_liked_items=True)
        return np.asarray(ids)


WEIGHTINGS = ("none", "bm25", "tfidf")


class ALSRecommender(_Base):
    """implicit ALS with confidence ``1 + alpha * w``, where ``w`` is the orders of a customer-product pair, or
    their BM25 or TF-IDF weight (``weighting``: frequent products and heavy buyers count less); see the module
    docstring."""

    weighting = "none"  # versions pickled before the parameter existed read it from the class

    def __init__(
        self,
        factors: int = 32,
        regularization: float = 0.1,
        alpha: float = 1.0,
        iterations: int = 15,
        weighting: str = "none",
        min_orders: int = 1,
        random_state: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.weighting = weighting
        self.min_orders = min_orders
        self.random_state = random_state

    def _confidence(self, m: sp.csr_matrix) -> sp.csr_matrix:
        from implicit.nearest_neighbours import bm25_weight, tfidf_weight

        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, not {self.weighting!r}")
        if self.weighting == "none":
            return m
        weighted = bm25_weight(m) if self.weighting == "bm25" else tfidf_weight(m)
        return sp.csr_matrix(weighted, dtype=np.float32)

    def fit(self, X: pd.DataFrame, y: Any = None, recent: pd.Series | None = None) -> ALSRecommender:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        m = self._fit_index(X, recent)
        with threadpool_limits(1, "blas"):  # implicit's own threads beat OpenBLAS's here
            self.model_ = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.random_state,
                calculate_training_loss=False,
            )
            self.model_.fit(self._confidence(m), show_progress=False)
        return self

    def _warm(self, users: np.ndarray, k: int) -> np.ndarray:
        """Top-k products per user by implicit's factors, without the products the user bought: implicit's own
        ``recommend(..., filter_already_liked_items=True)`` for batches of :data:`IMPLICIT_BATCH` users or more
        (batch scoring, the ranking table: its top-k runs on every core), :meth:`_scored` below that (a request)."""
        if len(users) < IMPLICIT_BATCH:
            return self._scored(users, k)
        ids, scores = self.model_.recommend(users, self.matrix_[users], N=min(k, self.matrix_.shape[1]),
                                            filter_already_liked_items=True)
        ids, scores = np.asarray(ids), np.asarray(scores)
        # a user who bought nearly everything: implicit fills with bought products at its sentinel score (the
        # dtype's lowest); padded with -1, as _scored does
        ids[~np.isfinite(scores) | (scores <= np.finfo(scores.dtype).min)] = -1
        return ids

    def _scored(self, users: np.ndarray, k: int) -> np.ndarray:
        """The same ranking as implicit's ``recommend(..., filter_already_liked_items=True)``
        (tests/unit/test_estimators.py compares the two), computed for the whole batch at once:
        implicit's filter slices the purchase matrix once per user inside its top-k, about
        30 us a user here, which made a served batch cost as much as its rows one by one.
        """
        # the item factors transposed into their own contiguous array, once: multiplying by the
        # transposed view costs about 5x more per call here (16 us against 3 us for 3 users)
        items_t = self.derived("_item_factors_t", lambda: np.ascontiguousarray(self.model_.item_factors.T))
        bits = self.derived("_bought_bits", lambda: bought_bits(self.matrix_))
        with _one_blas_thread():
            scores = self.model_.user_factors[users] @ items_t
        return top_unbought(scores, self.matrix_, users, k, copy=False, bits=bits if bits.size else None)


# EASE keeps a dense products x products float32 matrix (in fitting, and in the logged model): 400 MB at 10,000
# products, 65 MB for Online Retail II 2009-2010's 4,017
EASE_MAX_ITEMS = 10_000
EASE_BLOCK_PAIRS = 1_000_000  # purchase pairs whose products' co-occurrences are counted at once (X'X in blocks)


class EASERecommender(_Base):
    """EASE (Steck, WWW 2019): the item-item weights ``B`` that best rebuild the purchase matrix ``X`` (one where a
    customer bought a product) from itself, ``min ||X - XB||^2 + l2 ||B||^2`` with a zero diagonal, in closed form
    from ``P = (X'X + l2 I)^-1``: ``B_ij = -P_ij / P_jj``. A customer's scores are their purchases times ``B``,
    each purchase weighted ``0.5 ** (age / half_life_weeks)`` by the weeks between its last order and the newest in
    the data (``half_life_weeks=0``: every purchase weighs 1), so what they bought lately counts most.

    Up to :data:`EASE_MAX_ITEMS` products (the weights are dense); more is refused with the count."""

    _DERIVED: tuple[str, ...] = (*_Base._DERIVED, "_aged")

    def __init__(self, l2: float = 200.0, half_life_weeks: float = 16.0) -> None:
        self.l2 = l2
        self.half_life_weeks = half_life_weeks

    def fit(self, X: pd.DataFrame, y: Any = None, recent: pd.Series | None = None) -> EASERecommender:
        import scipy.linalg

        if self.l2 <= 0:
            raise ValueError(f"l2 must be positive, not {self.l2!r}")
        pairs = interactions(X) if "invoice_ts" in X else X
        # the age in weeks of each pair's last order, as of the newest order in the data (none kept without a
        # half-life: every purchase then weighs 1)
        age = None
        if float(self.half_life_weeks) > 0:
            last = pairs["last_ts"].to_numpy()
            age = ((last.max() - last) / np.timedelta64(1, "s")).astype(np.float32) / np.float32(7 * 86_400)
        m, self.age_weeks_ = self._index(pairs, recent, age)
        n_items = m.shape[1]
        if n_items > EASE_MAX_ITEMS:
            raise ValueError(f"EASE keeps products x products weights: {n_items:,} products is more than "
                             f"EASE_MAX_ITEMS ({EASE_MAX_ITEMS:,}); use kind='als'")
        gram = np.zeros((n_items, n_items), np.float32)  # X'X, dense: a block of customers' purchases at a time
        starts = np.searchsorted(m.indptr, np.arange(0, m.nnz, EASE_BLOCK_PAIRS), side="right") - 1
        bounds = np.append(starts, m.shape[0])  # customer rows: each block from one start to the next
        for first, stop in zip(bounds[:-1], bounds[1:], strict=True):
            lo, hi = m.indptr[first], m.indptr[stop]
            block = sp.csr_matrix((np.ones(hi - lo, np.float32), m.indices[lo:hi], m.indptr[first : stop + 1] - lo),
                                  shape=(stop - first, n_items))
            gram += (block.T @ block).toarray()
        gram[np.diag_indices(n_items)] += np.float32(self.l2)
        weights = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
        del gram
        if not weights.flags.c_contiguous:  # LAPACK's column order: the inverse is symmetric, so its transpose is it,
            weights = weights.T  # in the row order scoring reads (a customer's products are rows of the weights)
        weights /= -np.diag(weights).copy()[None, :]
        np.fill_diagonal(weights, 0.0)
        self.weights_ = weights
        return self

    def _user_weights(self, users: np.ndarray) -> sp.csr_matrix:
        """The users' purchases, each weighted by the age of its last order (rows of the purchase matrix's pattern;
        computed per call, so no second matrix of the size of the purchases is kept)."""
        m = self.matrix_
        if self.age_weeks_ is None:  # no half-life: every purchase weighs 1
            part = m[users]
            part.data = np.ones_like(part.data)
            return part
        # the ages in the purchase matrix's pattern: a view sharing its arrays, built once
        aged = self.derived("_aged", lambda: sp.csr_matrix((self.age_weeks_, m.indices, m.indptr), shape=m.shape))
        part = aged[users]
        part.data = np.exp2(-part.data / np.float32(self.half_life_weeks)).astype(np.float32)
        return part

    def _warm(self, users: np.ndarray, k: int) -> np.ndarray:
        bits = self.derived("_bought_bits", lambda: bought_bits(self.matrix_))
        n_items = self.matrix_.shape[1]
        out = np.empty((len(users), min(k, n_items)), np.int64)
        step = max(1, SCORES_AT_ONCE // max(n_items, 1))
        for start in range(0, len(users), step):
            part = users[start : start + step]
            with _one_blas_thread():
                scores = np.asarray(self._user_weights(part) @ self.weights_)
            out[start : start + step] = top_unbought(scores, self.matrix_, part, k, copy=False,
                                                     bits=bits if bits.size else None)
        return out


BOUGHT_BITS_MAX_BYTES = 64 * 2**20
# From this many users a call, implicit's multithreaded top-k beats one numpy product and argpartition: 25,500
# against 10,600 customers/s for batches of 10,000 over 4,000 products (python -m benchmarks.bench_batch)
IMPLICIT_BATCH = 256


def bought_bits(bought: sp.csr_matrix, max_bytes: int = BOUGHT_BITS_MAX_BYTES) -> np.ndarray:
    """The purchase matrix as one bit per (user, product), rows packed with ``np.packbits``, for
    :func:`top_unbought`'s mask; an empty array when that would take more than ``max_bytes``
    (users x products / 8: 2.2 MB for the 4,312 customers and 4,017 products of Online Retail II 2009-2010)."""
    n_users, n_items = bought.shape
    width = (n_items + 7) // 8
    if n_users * width > max_bytes:
        return np.zeros((0, 0), np.uint8)
    out = np.empty((n_users, width), np.uint8)
    step = max(1, 2**24 // max(n_items, 1))  # a dense slice of 16 MB at most while packing
    for start in range(0, n_users, step):
        part = bought[start : start + step]
        dense = np.zeros(part.shape, bool)  # every stored entry is a purchase, as in the per-user mask
        dense[np.repeat(np.arange(part.shape[0]), np.diff(part.indptr)), part.indices] = True
        out[start : start + step] = np.packbits(dense, axis=1)
    return out


def top_unbought(scores: np.ndarray, bought: sp.csr_matrix, users: np.ndarray, k: int,
                 copy: bool = True, bits: np.ndarray | None = None) -> np.ndarray:
    """Per row of ``scores`` (users x products), the ``k`` best products the user has no purchase of
    in ``bought``, best first; -1 pads rows with fewer than ``k`` such products. Bought products are set
    to -inf in ``scores`` itself when ``copy`` is False.

    ``bits`` (:func:`bought_bits` of ``bought``) masks the batch in three numpy calls; without it the
    mask is set one user's slice of ``bought`` at a time (two numpy calls a user). Served batches
    are small, so the number of numpy calls is what they cost: 26 against 33-34 us for 8 users of 600
    products in a ``timeit`` loop (``python -m benchmarks.probe_recommendation``)."""
    if copy:
        scores = np.array(scores)
    if bits is not None:
        np.putmask(scores, np.unpackbits(bits[users], axis=1, count=scores.shape[1]).view(bool), -np.inf)
    else:
        indptr, indices = bought.indptr, bought.indices
        for row, user in enumerate(users.tolist()):
            scores[row, indices[int(indptr[user]) : int(indptr[user + 1])]] = -np.inf
    k = min(k, scores.shape[1])
    rows = np.arange(len(users))[:, None]  # fancy indexing: numpy's take_along_axis costs more per call
    best = np.argpartition(scores, -k, axis=1)[:, -k:]
    best_scores = scores[rows, best]
    order = np.argsort(-best_scores, axis=1, kind="stable")
    top = best[rows, order]
    if len(users) and best_scores.min() == -np.inf:  # someone bought nearly everything: pad with -1
        top[best_scores[rows, order] == -np.inf] = -1
    return top


_PINNED = contextlib.nullcontext()


def _one_blas_thread() -> Any:
    """implicit's own threads beat OpenBLAS's here. threadpoolctl scans the loaded libraries on
    every call (about 0.3 ms), so skip it where the environment already pins one BLAS thread."""
    if os.environ.get("OPENBLAS_NUM_THREADS") == "1":
        return _PINNED
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, "blas")


EVALUATION_CHUNK = 2_000_000  # training rows an evaluation encodes at once (about 64 MB of pair numbers)


def new_purchases(known: pd.Index, train: pd.DataFrame, test: pd.DataFrame) -> pd.Series:
    """What a filtered recommendation can hit on a time split: per customer of ``known`` who bought in the test
    weeks, the set of products they bought then and had not bought before (in ``train``)."""
    test = test[test["customer_id"].isin(known)]
    customers, products = (pd.Index(test["customer_id"].unique()),
                           pd.Index(pd.concat([train["stock_code"], test["stock_code"]]).unique()))

    def pairs(frame: pd.DataFrame) -> np.ndarray:  # a (customer, product) pair as one number; -1: another customer
        c, p = customers.get_indexer(frame["customer_id"]), products.get_indexer(frame["stock_code"])
        return np.where(c >= 0, c.astype(np.int64) * len(products) + p, -1)

    tested = pd.Series(pairs(test))
    seen = np.zeros(len(tested), dtype=bool)
    for start in range(0, len(train), EVALUATION_CHUNK):  # the training rows a slice at a time: bounded memory
        seen |= tested.isin(pairs(train.iloc[start:start + EVALUATION_CHUNK])).to_numpy()  # a hash table, not a sort
    return test[~seen].groupby("customer_id")["stock_code"].agg(set)


def ranked(model: _Base, wanted: pd.Series, k: int = 10) -> tuple[list[list[str]], list[set[Hashable]]]:
    """The model's top ``k`` for each customer of ``wanted`` (:func:`new_purchases`), and what each wanted, as
    :func:`~training.models.metrics.ranking_metrics` takes them (a subset of the rows scores a subset of the
    customers)."""
    recs = model.recommend(wanted.index.tolist(), k)
    return [list(r) for r, _ in recs], [{str(x) for x in s} for s in wanted]


def evaluate_recommender(model: _Base, train: pd.DataFrame, test: pd.DataFrame, k: int = 10,
                         wanted: pd.Series | None = None) -> dict[str, float]:
    """Ranking metrics on the time split: relevant items are products a known customer bought in the
    test weeks and had not bought before (what a filtered recommendation can hit). Models fitted on the same pairs
    know the same customers: ``wanted``, :func:`new_purchases` of one of them, spares the others computing it."""
    from training.models.metrics import ranking_metrics

    if wanted is None:
        wanted = new_purchases(model.customers_, train, test)
    return ranking_metrics(*ranked(model, wanted, k), k, len(model.items_))
