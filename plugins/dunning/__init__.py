"""Dunning: collections automation. The domain package; core modules import no Airflow."""

__version__ = "0.1.0"
