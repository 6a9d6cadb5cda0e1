"""One feature service per model family: what each model reads."""

from feast import FeatureService

from feature_repo.views import category_weekly_sales, customer_profile, product_popularity

demand_forecast = FeatureService(
    name="demand_forecast",
    features=[category_weekly_sales],
    description="Weekly category sales and calendar: the forecasting target and its regressors.",
)
customer_segmentation = FeatureService(
    name="customer_segmentation",
    features=[customer_profile],
    description="The customer profile features that the segmentation model clusters.",
)
product_recommendation = FeatureService(
    name="product_recommendation",
    features=[product_popularity],
    description="Recent product popularity: the cold-start ranking and the popularity baseline.",
)
