"""Helpers importable under Prefect's names: ``flowbook.utilities.annotations``."""
