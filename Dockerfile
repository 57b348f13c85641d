# evalstack processing image: every pipeline step runs `python3 -m evalstack.pipeline.step ...` in it.
# Build: docker build -t evalstack .   (--build-arg EXTRAS="[sagemaker-mlflow,bertscore]" adds BERTScore/torch)
FROM python:3.11-slim

ARG EXTRAS="[sagemaker-mlflow]"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EVALSTACK_HOME=/opt/ml/evalstack

# WordNet for METEOR, read offline from Debian's files (evalstack/metrics/wordnet.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends wordnet-base \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/evalstack
COPY pyproject.toml README.md ./
COPY evalstack ./evalstack
RUN pip install ".${EXTRAS}"

# SageMaker Processing mounts /opt/ml/processing/* owned by root and runs the container as root, so
# the image keeps the default user; the job's IAM role, not the container user, bounds what it can do.
ENTRYPOINT ["python3", "-m", "evalstack.pipeline.step"]
