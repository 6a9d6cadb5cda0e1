"""Entities: who or what a feature row describes."""

from feast import Entity, ValueType

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A registered customer (Online Retail II 'Customer ID').",
)
product = Entity(
    name="product",
    join_keys=["stock_code"],
    value_type=ValueType.STRING,
    description="A product by stock code.",
)
category = Entity(
    name="category",
    join_keys=["category"],
    value_type=ValueType.STRING,
    description="A product category (keyword rules in training.data.categories).",
)
