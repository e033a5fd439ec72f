# syntax=docker/dockerfile:1.7
# The blinkchamber binary in a small non-root runtime image.
#
#   docker build -t blinkchamber:dev .
#   docker run --rm -p 8080:8080 -p 9090:9090 blinkchamber:dev serve --config /etc/blinkchamber/config.yaml
#
# Base images. The defaults are tags, so a plain `docker build` works anywhere. A release
# build pins both to the digest the tag pointed at when it was checked, so that rebuilding
# the same commit gives the same bases:
#
#   docker build $(scripts/pin-image-digests.sh) -t blinkchamber:0.1.0 .
#
# The script resolves each tag with `docker buildx imagetools inspect` (or `crane digest`)
# and prints `--build-arg BUILDER_IMAGE=…@sha256:<digest> --build-arg RUNTIME_IMAGE=…@sha256:<digest>`.
# Keep the two on the same Debian generation (trixie = Debian 13): the binary links
# against the build stage's glibc and runs on the runtime stage's.
ARG BUILDER_IMAGE=rust:1.95.0-slim-trixie
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian13:nonroot

# Build stage: a fixed Rust toolchain (the crate is edition 2024). Cargo's registry and the
# target directory are BuildKit cache mounts, so a rebuild after a source change recompiles
# the crate, not its dependencies. The `dist` profile (Cargo.toml) is the release profile
# with thin LTO, one codegen unit and no debug info; --locked builds exactly Cargo.lock.
FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --profile dist --locked --bin blinkchamber \
    && install -D -m 0755 target/dist/blinkchamber /out/blinkchamber

# Runtime stage: glibc + libgcc only, no shell, no package manager. TLS roots are compiled
# into the binary (rustls + webpki roots), so no CA bundle is needed either.
FROM ${RUNTIME_IMAGE} AS runtime
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
