"""Data tables of the procedural sample sets (YAML, loaded with importlib.resources)."""
