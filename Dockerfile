# qikchat-relay container image: the release binary on a distroless base, run as a non-root user.
#
#   docker build -t qikchat-relay:dev .
#   docker run --rm -p 127.0.0.1:8080:8080 --read-only --cap-drop ALL \
#     -e RELAY_SANDBOX=true -e RELAY_CLIENTS=demo:demo-token-not-a-secret-0001 qikchat-relay:dev
#
# Builds with BuildKit (the default builder since Docker 23), Buildah or Podman. There is
# deliberately no "# syntax=" line: that would make BuildKit fetch a frontend image from
# docker.io, and this file must also build where no public registry is reachable.
#
# Both base images are build arguments, so they can come from a mirror or from locally imported
# images (deploy/test-image.sh builds this file that way, offline). Keep both on the same Debian
# release: the binary is linked against the build image's glibc and must find the same or a newer
# one at run time.

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---------------------------------------------------------------------------------------------
# Build stage: compiles the relay into /out.
# ---------------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build

WORKDIR /usr/src/qikchat-relay

# The release profile (fat LTO, one codegen unit, no symbols) is in Cargo.toml, so the image ships
# the binary the benchmark measures.
ENV CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never \
    CARGO_NET_RETRY=5

# jemalloc, the relay's allocator (bench/PROFILE.md), is built from C sources with make, which the
# slim Rust image lacks. Skipped when the build image has it (deploy/test-image.sh's, offline).
# hadolint ignore=DL3008
RUN if ! command -v make > /dev/null; then \
        apt-get update && \
        apt-get install -y --no-install-recommends make=4.3-4.1 && \
        rm -rf /var/lib/apt/lists/*; \
    fi

# .dockerignore is an allowlist (Cargo.toml, Cargo.lock, src/, tests/api/): nothing else reaches this copy.
COPY . .

# Dependency caching: the crates.io registry and target/ live in cache mounts, which outlive the
# layer cache. A change in src/ recompiles only the relay crate, a change in Cargo.lock only the
# crates that changed. The sources are touched first because cargo decides freshness by mtime and
# COPY keeps the context's mtimes, which can be older than what the cached target/ was built from.
# target/ is a cache mount, so the binaries are copied out of it into /out, which the runtime
# stage takes and nothing else.
RUN --mount=type=cache,id=qikchat-relay-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=qikchat-relay-target,target=/usr/src/qikchat-relay/target,sharing=locked \
    set -eux; \
    find src -type f -exec touch {} +; \
    cargo build --release --locked --bin qikchat-relay; \
    install -D -m 0755 target/release/qikchat-relay /out/qikchat-relay; \
    install -d -m 0700 /state

# ---------------------------------------------------------------------------------------------
# Runtime stage: glibc, libgcc, CA certificates (rustls reads the system store to verify
# api.qikchat.in), tzdata, and the relay. No shell, no package manager.
# ---------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

# Provenance for the OCI labels; CI passes the version, the commit, its date and the repository URL.
ARG RUNTIME_IMAGE
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=""

LABEL org.opencontainers.image.title="qikchat-relay" \
      org.opencontainers.image.description="Holds the Qikchat WhatsApp API key and relays validated send requests from internal services." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"

COPY --from=build /out/ /usr/local/bin/
# RELAY_DATA_DIR: the embedded store (who sent each message, webhook events) when RELAY_REDIS_URL
# is not set. The relay refuses to start where it cannot write it, and the root filesystem is
# read-only in every deployment, so the directory is a volume owned by the relay's user: Docker and
# Podman give it an anonymous volume (with that owner) when nothing is mounted there; mount a
# persistent one to keep the store across containers.
COPY --from=build --chown=65532:65532 /state /var/lib/qikchat-relay
VOLUME ["/var/lib/qikchat-relay"]

# Only non-secret defaults. The Qikchat key and the caller tokens are given at run time
# (QIKCHAT_API_KEY_FILE pointing at a mounted secret, RELAY_CLIENTS from a secret), never here.
ENV RELAY_LISTEN_ADDR=0.0.0.0:8080 \
    RELAY_LOG_FORMAT=json \
    RELAY_DATA_DIR=/var/lib/qikchat-relay

# A numeric user, so Kubernetes' runAsNonRoot can verify it without an /etc/passwd lookup; the
# same uid as distroless' "nonroot", and set here so any RUNTIME_IMAGE runs the relay as non-root.
USER 65532:65532

EXPOSE 8080

# Docker and Compose only (Podman keeps it with --format docker; Kubernetes ignores it and uses
# the Deployment's httpGet probes). The image has no shell or curl: the relay probes itself.
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/qikchat-relay", "healthcheck", "/healthz"]

# Exec form: the relay is PID 1 and receives SIGTERM itself, then drains (RELAY_DRAIN_TIMEOUT_MS).
ENTRYPOINT ["/usr/local/bin/qikchat-relay"]
