# syntax=docker/dockerfile:1.7
# The blinkchamber binary in a small non-root runtime image.
#
#   docker build -t blinkchamber:dev .
#   docker run --rm -p 8080:8080 -p 9090:9090 blinkchamber:dev serve --config /etc/blinkchamber/config.yaml
#
# Build stage: the stable Rust toolchain (edition 2024). Cargo's registry and the target
# directory are BuildKit cache mounts, so a rebuild after a source change recompiles the
# crate, not its dependencies.
ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    locked=""; if [ -f Cargo.lock ]; then locked="--locked"; fi; \
    cargo build --release $locked --bin blinkchamber \
    && install -D -m 0755 target/release/blinkchamber /out/blinkchamber

# Runtime stage: glibc + libgcc only, no shell, no package manager. TLS roots are compiled
# into the binary (rustls + webpki roots), so no CA bundle is needed either.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="blinkchamber" \
      org.opencontainers.image.description="Redis-backed platform runtime: cache, sessions, tokens, rate limits, locks and priority event queues" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/blinkchamber /usr/local/bin/blinkchamber
# 65532 is distroless' nonroot user; the Helm chart runs the pods with the same uid/gid.
USER 65532:65532
# HTTP API (server.listen) and Prometheus metrics (server.metricsListen).
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/blinkchamber"]
CMD ["serve", "--config", "/etc/blinkchamber/config.yaml"]
