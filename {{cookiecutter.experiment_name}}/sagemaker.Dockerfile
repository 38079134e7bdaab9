# The image SageMaker jobs of {{ cookiecutter.experiment_name }} run in: the ml-exp base SageMaker
# image (an AWS PyTorch training DLC + the ml-exp runtime) plus this experiment's code and extras.
# Build and push with scripts/build_and_push.sh.
ARG BASE_IMAGE={{ cookiecutter.base_image_registry }}/ml-exp-pytorch-training:{{ cookiecutter._template_version }}-gpu-py312-cu133-amzn2023
FROM ${BASE_IMAGE}

# This experiment's own dependencies (the runtime and the ML stack are in the base image).
COPY requirements-extra.txt /opt/ml/code/requirements-extra.txt
RUN pip install --no-cache-dir -r /opt/ml/code/requirements-extra.txt

# SageMaker's code directory: settings.ini, experiment.py and anything they import.
COPY . /opt/ml/code
WORKDIR /opt/ml/code
ENV ML_EXP_EXPERIMENT_DIR=/opt/ml/code \
    PYTHONUNBUFFERED=1
