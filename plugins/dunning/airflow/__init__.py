"""The only part of Dunning that imports Airflow: binds the core stages to task context,
connections and object storage."""
