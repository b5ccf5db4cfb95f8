# abdoseg — the two commands a user needs: `make demo` (run the product) and `make test` (run the tests).
PYTHON ?= python3
VENV := .venv
DEV := .venv-dev
SAMPLES := tests/data/flare21/imagesTr
DEMO_OUT := demo_output

.PHONY: venv venv-dev venv-nnunet venv-eval dicom-tools demo test test-fast container container-test bench help
help:
	@echo "make demo            set up .venv (runtime + eval/preview extras), segment the bundled scans -> $(DEMO_OUT)/"
	@echo "make test            set up .venv-dev (runtime + training + test tools) and run the whole test suite"
	@echo "make test-fast       the same without the tests marked slow (over ~1 s each): a quick check while working"
	@echo "make container-test  build the image with podman and run it the organisers' way on the samples"
	@echo "make bench           end-to-end and per-stage timings + peak memory on FLARE-sized volumes"

$(VENV)/.stamp: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@
venv: $(VENV)/.stamp

# The demo's extras in the runtime venv: scoring ([eval]: scipy etc.) and previews ([preview]: Pillow), so `make demo`
# scores without the dev venv. The container image installs neither.
$(VENV)/.stamp-eval: $(VENV)/.stamp requirements-eval.txt requirements-preview.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-eval.txt -r requirements-preview.txt
	touch $@
venv-eval: $(VENV)/.stamp-eval

$(DEV)/.stamp: requirements.txt requirements-train.txt requirements-cohort.txt requirements-dev.txt requirements-eval.txt \
		requirements-dicom.txt requirements-preview.txt requirements-nnunet.txt
	$(PYTHON) -m venv $(DEV)
	$(DEV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@
venv-dev: $(DEV)/.stamp

# nnU-Net v2 for importing its model folders (abdoseg import-nnunet) and remaking tests/data/nnunet/: its own venv,
# beside the dev one.
NNUNET := .venv-nnunet
$(NNUNET)/.stamp: requirements.txt requirements-nnunet.txt
	$(PYTHON) -m venv $(NNUNET)
	$(NNUNET)/bin/pip install -q --disable-pip-version-check -r requirements-nnunet.txt
	touch $@
venv-nnunet: $(NNUNET)/.stamp

demo: venv venv-eval
	rm -rf $(DEMO_OUT)
	./predict.sh $(SAMPLES) $(DEMO_OUT) --log $(DEMO_OUT).jsonl --statistics --preview
	@ls -l $(DEMO_OUT)
	@echo "label maps $(DEMO_OUT)/<case>.nii.gz, statistics $(DEMO_OUT)/<case>.json, previews $(DEMO_OUT)/<case>.png:"
	@ls $(DEMO_OUT)/*.json $(DEMO_OUT)/*.png
	$(VENV)/bin/python -m abdoseg evaluate --pred $(DEMO_OUT) --gt tests/data/flare21/labelsTr
	@echo "DICOM series input (each folder of tests/data/dicom is a case) -> $(DEMO_OUT)/dicom/:"
	./predict.sh tests/data/dicom $(DEMO_OUT)/dicom --statistics --preview
	@ls -l $(DEMO_OUT)/dicom

# dciodvfy (dicom3tools) validates the DICOM outputs in the tests: installed from Debian when missing (as root).
dicom-tools:
	@sh .ci/dicom_tools.sh

test: venv venv-dev dicom-tools
	$(DEV)/bin/python -m pytest -q tests

test-fast: venv venv-dev dicom-tools
	$(DEV)/bin/python -m pytest -q -m "not slow" tests

container:
	bash .ci/container.sh --build-only

container-test:
	bash .ci/container.sh

bench: venv venv-dev
	$(DEV)/bin/python benchmarks/bench_pipeline.py
