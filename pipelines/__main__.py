import sys

from common.cli import Command, dispatch

COMMANDS = {
    "step": Command("pipelines.step", "run one step of the catalog refresh for a run (what each DAG task runs)"),
    "bootstrap": Command("pipelines.bootstrap", "the first published repository, before any server runs"),
    "dag-test": Command("pipelines.airflow_run", "`airflow dags test` of the catalog-refresh DAG in the Airflow environment"),
    "demo": Command("pipelines.demo", "make pipeline: generated audio, bootstrap, server, a good and a worse DAG run, the report"),
}

if __name__ == "__main__":
    sys.exit(dispatch("python -m pipelines", "CloudTune catalog-refresh pipeline", COMMANDS))
