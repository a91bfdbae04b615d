"""The engine: run lifecycles, run records, events. Knows nothing of Jupyter, SQL or HTML."""
