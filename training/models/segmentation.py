"""Customer segmentation: scaled behaviour features, KMeans, k chosen by stability and silhouette, named profiles.

Features (all from the ``customer_segmentation`` feature service): order rate per week of
tenure, lines per order, units per line and unit price, each log-transformed then
standardised. ``k`` is chosen among the values of ``k_range`` whose clustering is stable (mean
adjusted Rand index of refits on bootstrap resamples at least ``min_stability``): the one with the
highest silhouette score (ties go to the smaller k; stability is measured in silhouette order until a k
passes); when no k is that stable, the most stable one.
Segments that marketing would act on must not change with the sample.

Each cluster is named by explicit rules on its profile (the mean of the standardised features),
so analysts read "wholesale" or "bargain", not "cluster 2", and a name always says something
true of its members (:func:`name_segments`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, davies_bouldin_score, silhouette_score
from sklearn.preprocessing import StandardScaler

from feature_repo.names import PROFILE_FEATURES
from training.models.derived import DerivedLookups

__all__ = ["CustomerSegmenter", "INPUT_FEATURES", "segment_features", "segment_matrix", "bootstrap_stability",
           "name_segments", "NAME_MARGIN"]

INPUT_FEATURES = list(PROFILE_FEATURES)  # the customer_profile feature view
DERIVED = ["order_rate", "basket_lines", "units_per_line", "unit_price"]
NAME_MARGIN = 0.5  # a named segment stands this far (in customers' standard deviations) from the next segment
NEW_DAYS = 90.0  # a segment whose median customer first bought less than this long ago is "new"
STABILITY_SAMPLE = 10_000  # customers the bootstrap refits of the choice of k use (a sample beyond that)


def segment_matrix(X: Any) -> np.ndarray:
    """The clustering space as an (n, 4) array.

    ``X`` is a DataFrame or a mapping of columns (named by :data:`INPUT_FEATURES`), or an (n, 5)
    array with the columns in that order (the serving path: one array, no per-column copies).
    Log order rate per week of tenure, log basket size, log units per line, log price.
    """
    if isinstance(X, np.ndarray):
        A = X.astype(float, copy=False)
        if A.ndim != 2 or A.shape[1] != len(INPUT_FEATURES):
            raise ValueError(f"expected an (n, {len(INPUT_FEATURES)}) array of {INPUT_FEATURES}, got {A.shape}")
    else:
        missing = [f for f in INPUT_FEATURES if f not in X]
        if missing:
            raise KeyError(f"missing features: {sorted(missing)}")
        A = np.array([np.asarray(X[f], dtype=float) for f in INPUT_FEATURES]).T
    out = np.empty((len(A), 4))
    out[:, 0] = np.log1p(A[:, 0] / (np.maximum(A[:, 1], 7.0) / 7.0))  # frequency per week of tenure
    out[:, 1:] = np.log(np.maximum(A[:, 2:], 1e-3))  # basket lines, units per line, unit price
    return out


def segment_features(X: pd.DataFrame) -> pd.DataFrame:
    """:func:`segment_matrix` as a named frame on ``X``'s index (training and reports)."""
    return pd.DataFrame(segment_matrix(X), columns=DERIVED, index=X.index)


def name_segments(profile: pd.DataFrame, tenure_days: pd.Series | None = None, margin: float = NAME_MARGIN
                  ) -> tuple[dict[int, str], dict[int, str]]:
    """Names and the reason for each, from each segment's mean standardised features (columns of DERIVED) and
    its members' median tenure in days.

    - **new**: the shortest median tenure of all segments, under ``NEW_DAYS`` (their order rate per week of
      tenure is high because their tenure is short, which says nothing of loyalty);

    then these rules, each naming at most one segment and only the segment that is extreme on its measure, by
    at least ``margin`` against the next segment:

    - **wholesale**: the largest baskets (lines per order plus units per line) of all segments;
    - **bargain**: the lowest unit price of all segments;
    - **occasional**: the lowest order rate of all segments;
    - **loyal**: the highest order rate of the segments other than wholesale and new.

    A segment that two rules pick keeps the first name; a name whose segment is taken or not distinct
    enough is not given to another one. The largest segment no rule names is **mainstream** (not extreme on
    any measure); any other stays ``segment_<i>``.
    """
    names: dict[int, str] = {}
    why: dict[int, str] = {}
    if tenure_days is not None and len(tenure_days) > 1:
        newest = int(str(tenure_days.idxmin()))
        if float(tenure_days.min()) < NEW_DAYS:
            names[newest] = "new"
            why[newest] = f"shortest tenure of all segments (median {float(tenure_days.min()):.0f} days)"
    basket = profile["basket_lines"] + profile["units_per_line"]
    rules: list[tuple[str, pd.Series, bool, str]] = [
        ("wholesale", basket, True, "largest baskets"),
        ("bargain", profile["unit_price"], False, "lowest unit price"),
        ("occasional", profile["order_rate"], False, "lowest order rate"),
        ("loyal", profile["order_rate"], True, "highest order rate"),
    ]
    for name, score, largest, what in rules:
        skipped = [i for i in score.index if names.get(int(i)) in ("wholesale", "new")] if name == "loyal" else []
        pool = score.drop(skipped)
        if len(pool) < 2:
            continue
        ordered = pool.sort_values(ascending=not largest)
        pick, gap = int(ordered.index[0]), abs(float(ordered.iloc[0] - ordered.iloc[1]))
        if pick in names or gap < margin:
            continue
        names[pick] = name
        of = "of the other segments but wholesale and new" if skipped else "of all segments"
        why[pick] = f"{what} {of} ({gap:.2f} sd beyond the next)"
    unnamed = [int(i) for i in profile.index if int(i) not in names]
    for i in unnamed:
        names[i], why[i] = f"segment_{i}", "no rule applies: not extreme enough on any measure"
    if unnamed and "size" in profile:
        sizes = profile["size"].to_dict()
        largest_unnamed = max(unnamed, key=lambda i: float(sizes[i]))
        names[largest_unnamed] = "mainstream"
        why[largest_unnamed] = "the largest segment no rule names: not extreme on any measure"
    return names, why


def _stability(S: np.ndarray, base: np.ndarray, k: int, bootstraps: int, seed: int) -> float:
    """Mean ARI between ``base`` labels and refits of k-means on bootstrap resamples of ``S``."""
    rng = np.random.default_rng(seed)
    scores = []
    for b in range(bootstraps):
        idx = rng.integers(0, len(S), len(S))
        km = KMeans(n_clusters=k, n_init=3, random_state=b).fit(S[idx])
        scores.append(adjusted_rand_score(base, km.predict(S)))
    return float(np.mean(scores))


class CustomerSegmenter(DerivedLookups, BaseEstimator):  # type: ignore[misc]
    """KMeans on standardised log behaviour features with k chosen by stability, then silhouette."""

    _DERIVED = ("_folded",)  # serving's lookup (DerivedLookups)

    def __init__(self, k_range: Sequence[int] = tuple(range(2, 9)), n_init: int = 10, random_state: int = 0,
                 min_stability: float = 0.85, stability_bootstraps: int = 10) -> None:
        self.k_range = k_range
        self.n_init = n_init
        self.random_state = random_state
        self.min_stability = min_stability
        self.stability_bootstraps = stability_bootstraps

    def fit(self, X: pd.DataFrame, y: Any = None) -> CustomerSegmenter:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # small k-means fits: one thread is as fast, and spins nothing when CPUs are busy
            return self._fit(X)

    def _fit(self, X: pd.DataFrame) -> CustomerSegmenter:
        self.forget_derived()
        Z = segment_features(X)
        self.scaler_ = StandardScaler().fit(Z)
        S = self.scaler_.transform(Z)
        order = np.random.default_rng(self.random_state).permutation(len(S))
        sample, few = order[:5000], S[order[:STABILITY_SAMPLE]]
        self.silhouette_by_k_: dict[int, float] = {}
        self.stability_by_k_: dict[int, float] = {}
        models: dict[int, KMeans] = {}
        for k in self.k_range:
            if k >= len(S):
                break
            km = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.random_state).fit(S)
            models[k] = km
            self.silhouette_by_k_[k] = float(silhouette_score(S[sample], km.labels_[sample]))
        if not models:
            raise ValueError(f"need more than {min(self.k_range)} customers to segment, got {len(S)}")
        # the best silhouette among the stable k: stability is measured in silhouette order until one is stable
        self.k_ = 0
        for k in sorted(models, key=lambda k: (-round(self.silhouette_by_k_[k], 6), k)):
            self.stability_by_k_[k] = _stability(few, models[k].predict(few), k, self.stability_bootstraps,
                                                 self.random_state)
            if self.stability_by_k_[k] >= self.min_stability:
                self.k_ = k
                break
        if not self.k_:  # nothing is that stable: the most stable clustering (ties to the better silhouette)
            self.k_ = max(models, key=lambda k: (round(self.stability_by_k_[k], 6),
                                                 round(self.silhouette_by_k_[k], 6), -k))
        self.kmeans_ = models[self.k_]
        labels = self.kmeans_.labels_
        means = pd.DataFrame(S, columns=DERIVED).groupby(labels).mean()
        raw = X[INPUT_FEATURES].groupby(labels).median()  # the profiles: medians, sizes, shares
        raw["customers"] = np.bincount(labels)
        raw["share"] = raw["customers"] / raw["customers"].sum()
        means["size"] = raw["customers"]
        self.names_, self.name_reasons_ = name_segments(means, raw["tenure_days"].astype(float))
        raw["named_for"] = [self.name_reasons_[int(i)] for i in raw.index]
        raw.index = [self.names_[int(i)] for i in raw.index]
        self.profiles_ = raw
        self.feature_names_in_ = np.array(INPUT_FEATURES)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Cluster index per customer: the nearest centre in the standardised space.

        The same choice as ``KMeans.predict(StandardScaler.transform(...))`` on plain arrays:
        sklearn's input validation on a one-row frame costs about 2 ms, this about 12 us. A row's
        own squared norm is the same for every centre, so the nearest centre minimises
        ``|c|^2 - 2 s.c`` alone; with ``s = (z - mean) / scale`` that is ``b + z.W`` for
        ``W = -2 c / scale`` and ``b = |c|^2 + 2 (mean / scale).c``, folded once per fitted model.
        """
        weights, bias = self.derived("_folded", self._fold)
        labels: np.ndarray = (segment_matrix(X) @ weights + bias).argmin(axis=1).astype(np.int32)
        return labels

    def _fold(self) -> tuple[np.ndarray, np.ndarray]:
        centres, mean, scale = self.kmeans_.cluster_centers_, self.scaler_.mean_, self.scaler_.scale_
        bias = (centres * centres).sum(axis=1) + 2 * (mean / scale) @ centres.T
        return np.ascontiguousarray((-2 * centres / scale).T), bias

    def predict_names(self, X: pd.DataFrame) -> np.ndarray:
        return np.array([self.names_[int(i)] for i in self.predict(X)], dtype=object)

    def score_report(
        self, X: pd.DataFrame, truth: Sequence[str] | None = None, bootstraps: int = 10
    ) -> dict[str, float]:
        """Silhouette, Davies-Bouldin, size shares, bootstrap stability and (if given) planted-truth ARI."""
        S = self.scaler_.transform(segment_features(X))
        labels = self.predict(X)
        sample = np.random.default_rng(self.random_state).permutation(len(S))[:5000]
        out = {
            "k": float(self.k_),
            "silhouette": float(silhouette_score(S[sample], labels[sample])),
            "davies_bouldin": float(davies_bouldin_score(S, labels)),
            "stability_ari": bootstrap_stability(self, X, bootstraps),
            "smallest_segment_share": float(np.bincount(labels).min() / len(labels)),
        }
        for i, share in enumerate(np.bincount(labels, minlength=self.k_) / len(labels)):
            out[f"share_{self.names_[i]}"] = float(share)
        if truth is not None:
            out["planted_ari"] = float(adjusted_rand_score(list(truth), labels))
        return out


def bootstrap_stability(model: CustomerSegmenter, X: pd.DataFrame, bootstraps: int = 10) -> float:
    """Mean ARI between the model's labels and those of refits on bootstrap resamples (same k)."""
    from threadpoolctl import threadpool_limits

    S = model.scaler_.transform(segment_features(X))
    with threadpool_limits(1):
        return _stability(S, model.kmeans_.predict(S), model.k_, bootstraps, model.random_state)
