"""The toy family's training side: estimator, training set from Feast, evaluation, pyfunc wrapper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModelContext
from sklearn.base import BaseEstimator

from training import trainers as t
from training.families import Family
from training.features import store
from training.pyfunc import EstimatorModel
from zmlops.settings import Settings

FEATURES = ["basket_lines", "units_per_line", "unit_price"]


def basket_value(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(frame["basket_lines"] * frame["units_per_line"] * frame["unit_price"], dtype=float)


def _logs(frame: pd.DataFrame) -> np.ndarray:
    return np.log(frame[FEATURES].to_numpy(dtype=float).clip(min=1e-6))


class BasketValue(BaseEstimator):  # type: ignore[misc]
    def __init__(self, fit_intercept: bool = True) -> None:
        self.fit_intercept = fit_intercept

    def fit(self, frame: pd.DataFrame) -> BasketValue:
        from sklearn.linear_model import LinearRegression

        self.model_ = LinearRegression(fit_intercept=self.fit_intercept).fit(
            _logs(frame), np.log(basket_value(frame).clip(min=1e-6)))
        self.median_ = float(np.median(basket_value(frame)))
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(np.exp(self.model_.predict(_logs(frame))))


def training_data(settings: Settings, clean_file: Path, data_version: str) -> t.TrainingData:
    published = store.published_version(settings)
    assert published is not None, "features are published before training"
    as_of = pd.Timestamp(published["tables"]["customer_features"]["newest"])
    customers = store.source_table(settings, "customer_features", ["customer_id"])
    entities = pd.DataFrame({"customer_id": customers["customer_id"].unique(), "event_timestamp": as_of})
    frame, left_out = t.consenting(settings, store.training_frame(settings, "basket_value", entities).dropna(),
                                   "profiling")
    return t.TrainingData(frame.reset_index(drop=True), pd.read_parquet(clean_file), as_of.to_pydatetime(),
                          extra={"consent_excluded": left_out})


def evaluate(model: BasketValue, data: t.TrainingData) -> t.Evaluation:
    """Mean absolute error on the second half of the customers, the model refitted on the first."""
    half = len(data.frame) // 2
    train, test = data.frame.iloc[:half], data.frame.iloc[half:]
    fitted = BasketValue(**model.get_params()).fit(train)
    actual = basket_value(test)
    return t.Evaluation({"mae": float(np.abs(fitted.predict(test) - actual).mean())},
                        {"mae": float(np.abs(fitted.median_ - actual).mean())})


class BasketValueModel(EstimatorModel):
    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        return pd.DataFrame({"basket_value": self.estimator.predict(model_input)})


BASKET_VALUE = Family(
    name="basket-value",
    primary_metric="mae",
    greater_is_better=False,
    baseline_name="the median basket value of the training customers",
    make_estimator=BasketValue,
    training_data=training_data,
    evaluate=evaluate,
    input_example=lambda data: data.frame[FEATURES].head(3).reset_index(drop=True),
    wrapper=BasketValueModel,
    purpose="A toy family of the tests: proves a family is one catalog entry.",
    limitations="None worth stating: it learns a product of its inputs.",
)
