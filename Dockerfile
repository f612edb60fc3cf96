# CPU image of the toolkit. Weights and data sets are mounted, never baked in:
#   docker run --rm -v $PWD/weights:/app/weights -v /data:/data forensics \
#       python -m forensics predict --detector resnet50 --weights resnet50.cnndet_blur_jpg_prob0.5 /data/imgs
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY requirements.txt requirements.lock pyproject.toml README.md ./
# The CPU build of torch (2.14.1+cpu satisfies the lock's torch==2.14.1; the CUDA runtime pins then stay unused).
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt -c requirements.lock
COPY forensics ./forensics
COPY analyses ./analyses
COPY weights/README.md ./weights/README.md
COPY tests ./tests
COPY bench ./bench
RUN pip install --no-deps -e .
ENV FORENSICS_WEIGHTS=/app/weights
CMD ["python", "-m", "forensics", "--help"]
