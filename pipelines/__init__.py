"""Datasets (importers, splits, the demo set), DVC helpers and reports."""
