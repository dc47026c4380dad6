# mammo-node image (CPU). For a GPU host, build FROM an NVIDIA CUDA runtime image instead and
# keep torch's default CUDA wheels.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /opt/mammo-node
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY mammo_node ./mammo_node
COPY trainer ./trainer
# CPU wheels of torch keep the image ~1 GB instead of ~6 GB
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.11,<2.15" "torchvision>=0.26,<0.30" \
 && pip install -e .

ENV MAMMO_DATA_DIR=/var/lib/mammo-node MAMMO_HOST=0.0.0.0
VOLUME /var/lib/mammo-node
EXPOSE 11112 8080
# non-root
RUN useradd --system --home /var/lib/mammo-node mammo && mkdir -p /var/lib/mammo-node \
 && chown mammo /var/lib/mammo-node
USER mammo
CMD ["mammo-node", "serve"]
