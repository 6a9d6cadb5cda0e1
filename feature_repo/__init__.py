"""Feast declarations of the stack (entities, sources, views, one service per model) and its feature names.

Declarations only: ``feast apply`` imports every module here. The stack applies the same objects through
:func:`training.features.store.apply_definitions`, which reads :data:`feature_repo.definitions.DEFINITIONS`.
The feature names are in :mod:`feature_repo.names`, which imports no Feast: importing this package imports
nothing either.
"""
