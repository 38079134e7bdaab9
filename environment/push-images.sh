#!/usr/bin/env bash
# Push images to Amazon ECR (make push-images): log in to each image's registry, create its
# repository when it does not exist (scan on push, as scripts/build_and_push.sh of an experiment
# does), push. Every image must be named <account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>.
# Usage: environment/push-images.sh IMAGE...   (CONTAINER_ENGINE: podman or docker)
# Needs: the AWS CLI and credentials allowed to create ECR repositories and push to them.
set -euo pipefail

engine="${CONTAINER_ENGINE:-docker}"
if [[ $# -eq 0 ]]; then
    echo "usage: $0 IMAGE..." >&2
    exit 2
fi

logged_in=" "
for image in "$@"; do
    registry="${image%%/*}"
    if [[ ! "${registry}" =~ ^[0-9]{12}\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$ ]]; then
        echo "${image}: not in an ECR registry; set REGISTRY=<account>.dkr.ecr.<region>.amazonaws.com" >&2
        exit 2
    fi
    region="${BASH_REMATCH[1]}"
    path="${image#*/}"
    repository="${path%:*}"
    if [[ "${logged_in}" != *" ${registry} "* ]]; then
        aws ecr get-login-password --region "${region}" | "${engine}" login --username AWS --password-stdin "${registry}"
        logged_in="${logged_in}${registry} "
    fi
    if ! aws ecr describe-repositories --region "${region}" --repository-names "${repository}" >/dev/null 2>&1; then
        aws ecr create-repository --region "${region}" --repository-name "${repository}" \
            --image-scanning-configuration scanOnPush=true >/dev/null
        echo "created ECR repository ${repository} in ${region}"
    fi
    "${engine}" push "${image}"
done
