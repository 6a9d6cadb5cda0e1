"""Demo drivers (not part of the installed package): ``python -m demos`` runs the main job (``make demo``)."""
