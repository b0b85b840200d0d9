# autoprune: one image for the controller and the Ray nodes (workers need the same code and zoo).
# CPU torch by default. The CUDA variant is the same file built with PyPI's default (CUDA) wheel:
#   docker build --build-arg TORCH_INDEX_URL= -t autoprune:cuda .
# and run with the NVIDIA container runtime (see docs/deploy.md).
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu"
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    AUTOPRUNE_DATA_DIR=/var/lib/autoprune \
    AUTOPRUNE_CACHE_DIR=/var/lib/autoprune/cache

WORKDIR /app
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"; \
    else pip install "$TORCH_SPEC"; fi
COPY pyproject.toml README.md ./
COPY search_spaces ./search_spaces
COPY agents ./agents
COPY workers ./workers
COPY service ./service
RUN pip install . && useradd --create-home autoprune && mkdir -p /var/lib/autoprune \
    && chown -R autoprune /var/lib/autoprune
USER autoprune
EXPOSE 8000
CMD ["autoprune", "serve", "--host", "0.0.0.0"]
