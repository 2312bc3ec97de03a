FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY auctioneer ./auctioneer
COPY agent_client ./agent_client
COPY simulation ./simulation
COPY dashboard ./dashboard
COPY cli ./cli
COPY examples ./examples
RUN pip install --no-cache-dir .
ENV PYTHONPATH=/app
