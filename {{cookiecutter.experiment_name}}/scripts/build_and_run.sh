#!/usr/bin/env bash
# Build run.Dockerfile and run `exp <args>` (default: `exp run`) inside it.
# Local runs land in ./.exp-store (mounted); AWS and W&B credentials are passed through from
# the environment only when set, and ~/.aws is mounted read-only when present.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

image="{{ cookiecutter.experiment_name | lower }}:run-$(git rev-parse --short HEAD 2>/dev/null || echo local)"

docker build --file run.Dockerfile --tag "${image}" .

mkdir -p .exp-store
run_args=(--rm --volume "${PWD}/.exp-store:/experiment/.exp-store")
for name in AWS_PROFILE AWS_REGION AWS_DEFAULT_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY \
    AWS_SESSION_TOKEN AWS_ENDPOINT_URL WANDB_API_KEY WANDB_MODE; do
    if [[ -n "${!name:-}" ]]; then
        run_args+=(--env "${name}")
    fi
done
if [[ -d "${HOME}/.aws" ]]; then
    run_args+=(--volume "${HOME}/.aws:/root/.aws:ro")
fi

if [[ $# -eq 0 ]]; then
    set -- run
fi
docker run "${run_args[@]}" "${image}" "$@"
