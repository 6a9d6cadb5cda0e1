"""Zero Margin MLOps: the foundation (settings, the model catalog, stores) and the project CLI.

Importing the package imports nothing: :mod:`zmlops.catalog` is read by tools without the stack's
libraries (the chart's values generator in the delivery environment).
"""
