# The image that drives the pipeline of {{ cookiecutter.experiment_name }} (`exp run` in a container):
# the ml-exp base run image plus this experiment's code and extras.
# Build and run with scripts/build_and_run.sh.
ARG BASE_IMAGE={{ cookiecutter.base_image_registry }}/ml-exp-run:{{ cookiecutter._template_version }}-cpu-py311-debian12
FROM ${BASE_IMAGE}

COPY requirements-extra.txt /experiment/requirements-extra.txt
RUN pip install --no-cache-dir -r /experiment/requirements-extra.txt

COPY . /experiment
WORKDIR /experiment
ENV ML_EXP_EXPERIMENT_DIR=/experiment \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["exp"]
CMD ["run"]
