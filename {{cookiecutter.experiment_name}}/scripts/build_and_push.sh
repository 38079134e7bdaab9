#!/usr/bin/env bash
# Build sagemaker.Dockerfile, push it to ECR and print the IMAGE_URI for settings.ini.
# Tags: <experiment name> (moving) and <experiment name>-<git sha> (fixed; use this one).
# Needs: docker, the AWS CLI and credentials allowed to push to ECR.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

region="${AWS_REGION:-{{ cookiecutter.aws_region }}}"
repository="${ECR_REPOSITORY:-{{ cookiecutter.ecr_repository }}}"
base_registry="{{ cookiecutter.base_image_registry }}"

account="$(aws sts get-caller-identity --query Account --output text)"
registry="${account}.dkr.ecr.${region}.amazonaws.com"
tag="{{ cookiecutter.experiment_name | lower }}"
sha="$(git rev-parse --short HEAD 2>/dev/null || echo nogit)"
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then
    sha="${sha}-dirty"
fi

ecr_login() {  # $1: registry host, $2: its region
    aws ecr get-login-password --region "$2" | docker login --username AWS --password-stdin "$1"
}

# The base image may live in another account's registry: log in there too.
if [[ "${base_registry}" == *.dkr.ecr.*.amazonaws.com ]]; then
    base_region="${base_registry#*.dkr.ecr.}"
    ecr_login "${base_registry}" "${base_region%%.amazonaws.com}"
fi
ecr_login "${registry}" "${region}"

if ! aws ecr describe-repositories --region "${region}" --repository-names "${repository}" >/dev/null 2>&1; then
    aws ecr create-repository --region "${region}" --repository-name "${repository}" \
        --image-scanning-configuration scanOnPush=true >/dev/null
fi

docker build --file sagemaker.Dockerfile \
    --tag "${registry}/${repository}:${tag}" \
    --tag "${registry}/${repository}:${tag}-${sha}" .
docker push "${registry}/${repository}:${tag}"
docker push "${registry}/${repository}:${tag}-${sha}"

echo "Pushed. Put this in settings.ini:"
echo "IMAGE_URI = ${registry}/${repository}:${tag}-${sha}"
