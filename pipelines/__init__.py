"""Catalog refresh orchestration: an Airflow DAG over the project's CLIs, with run metrics in SQL."""
