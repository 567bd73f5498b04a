# syntax=docker/dockerfile:1
# docproc in a container: built in the Rust image, run in a slim Debian
# with the one binary. `docker compose up` (docker-compose.yml) runs the
# design's deployment from it.
#   docker build -t docproc .
#   docker build --build-arg FEATURES=redis -t docproc:lean .
#   docker run -p 8080:8080 -v docproc:/data -e DOCPROC_API_KEYS=… docproc
# (a server listening beyond loopback refuses to start without API keys,
# or DOCPROC_INSECURE=true where only trusted clients reach it).
# The build needs clang/libclang (RocksDB's bindings) and a C/C++ toolchain
# (RocksDB, librdkafka for the kafka:// adapter).

FROM rust:1.95-bookworm AS build
# Debian's own versions of the release the image is built on: pinning them
# would break the build at Debian's next point release (hadolint DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The queue adapters beside the embedded broker: redis, kafka, rabbitmq.
ARG FEATURES=redis,kafka,rabbitmq
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p docproc-server --bin docproc --features "$FEATURES" \
 && install -m 0755 target/release/docproc /docproc

FROM debian:bookworm-slim
# ca-certificates: webhooks, mail and LLM endpoints over TLS.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --home-dir /data docproc \
 && mkdir -p /data && chown docproc:docproc /data
COPY --from=build /docproc /usr/local/bin/docproc
USER 10001
WORKDIR /data
VOLUME /data
ENV DOCPROC_DATA_DIR=/data
EXPOSE 8080 7070 9100
HEALTHCHECK --interval=10s --timeout=5s --retries=3 CMD ["docproc", "health"]
ENTRYPOINT ["docproc"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
