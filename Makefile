# The README's two commands are `make demo` and `make test`; both build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
# The Debian packages the wheels' binaries link (setup/apt-packages.txt): installed and checked after .venv.
SYSTEM_STAMP := $(VENV)/.system-$(shell cat setup/apt-packages.txt setup/system-packages.sh | cksum | cut -d' ' -f1)
# Apache Airflow gets its own environment: its pins are not the project's, and its DAG only calls our CLIs.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_LOCK := pipelines/requirements-airflow.txt
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.setup-$(shell cat $(AIRFLOW_LOCK) | cksum | cut -d' ' -f1)

.PHONY: setup airflow-setup test demo serve corpus quality bench pipeline report clean

setup: $(SETUP_STAMP) $(SYSTEM_STAMP)

$(SETUP_STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[client,train,export,bench,postgres,api,milvus,dev]"
	# Only the tritonserver binary and its Python backend are used; its own Python deps
	# (numpy<2, pyzmq, ...) are not needed to start the binary.
	$(PY) -m pip install -q --no-deps nvidia-pytriton==0.7.0
	rm -f $(VENV)/.setup-*
	touch $@

$(SYSTEM_STAMP): $(SETUP_STAMP) setup/apt-packages.txt setup/system-packages.sh
	setup/system-packages.sh $(PY)
	rm -f $(VENV)/.system-*
	touch $@

airflow-setup: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): $(AIRFLOW_LOCK)
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install -q --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install -q -r $(AIRFLOW_LOCK)
	rm -f $(AIRFLOW_VENV)/.setup-*
	touch $@

test: setup airflow-setup
	$(PY) -m pytest -q

demo: setup
	$(PY) -m demo

# The embedded tritonserver (loopback only) and the search API on http://127.0.0.1:8080 in front of it.
serve: setup
	$(PY) -m api serve --embedded --no-auth

# Real music: installs Debian's free game-music packages (apt-get as root) and writes artifacts/corpus.
corpus: setup
	$(PY) -m training corpus

quality: setup
	$(PY) -m training quality

bench: setup
	$(PY) -m benchmarks perf --suite cpu

pipeline: setup airflow-setup
	$(PY) -m pipelines demo

report: setup
	$(PY) -m benchmarks report --db $${CLOUDTUNE_METRICS_DB:-sqlite:///artifacts/pipeline/metrics.sqlite}

clean:
	rm -rf artifacts reports/*.png benchmarks/results
