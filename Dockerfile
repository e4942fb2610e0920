# syntax=docker/dockerfile:1
#
# One image with the three strata binaries; the compose file or the
# Kubernetes manifests choose which one a container runs:
#
#   docker build -t strata .
#   docker run --rm strata strata-reader --config /etc/strata/strata.toml
#
# tests/tests/packaging.rs checks this file against the workspace (binary
# names, the runtime user, the exposed port); no container engine runs on
# the development machine, so it is not built there.

# --- build -------------------------------------------------------------------
# The workspace's rust-version is 1.89; this is the toolchain strata is
# developed with. aws-lc-sys and zstd-sys build with the image's gcc: no
# cmake, clang or libpq is needed.
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The target directory is a cache mount (kept between builds, not part of a
# layer), so the binaries are copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin strata-reader --bin strata-writer --bin strata-stage \
    && mkdir -p /out \
    && cp target/release/strata-reader target/release/strata-writer target/release/strata-stage /out/

# --- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: the S3 client, the AWS SDK (SQS) and the webhook
# destination's HTTP client trust the system's roots. PostgreSQL TLS needs
# nothing here: sslrootcert=system uses the Mozilla roots built into strata.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed UID/GID, so Kubernetes' runAsUser and volume ownership match.
RUN groupadd --system --gid 10001 strata \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/strata --shell /usr/sbin/nologin strata \
    && mkdir -p /var/lib/strata/strata-stage /etc/strata \
    && chown -R 10001:10001 /var/lib/strata
COPY --from=builder /out/strata-reader /out/strata-writer /out/strata-stage /usr/local/bin/
# The default stage url is ./strata-stage: a local stage lands in
# /var/lib/strata/strata-stage (mount a volume there to keep it). HOME is
# where ~/.postgresql/root.crt is looked for.
WORKDIR /var/lib/strata
ENV HOME=/var/lib/strata
USER 10001:10001
# /metrics, /healthz, /readyz: set telemetry.listen = "0.0.0.0:9464" in the
# config (the services default to 127.0.0.1, unreachable from outside).
EXPOSE 9464
CMD ["strata-reader", "--config", "/etc/strata/strata.toml"]
