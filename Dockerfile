# syntax=docker/dockerfile:1
#
# wx-jssdk as a container image:
#
#   docker build -t wx-jssdk .
#   docker run --rm -p 8080:8080 \
#     -e WXJSSDK__REDIS__URL=redis://redis.example:6379/0 \
#     -e WXJSSDK__APPS__DEFAULT__APPID=wx... -e WXJSSDK__APPS__DEFAULT__SECRET=... \
#     -e WXJSSDK__APPS__DEFAULT__TOKEN=... wx-jssdk
#
# The same image runs the sandbox WeChat API: `docker run ... wx-jssdk sandbox --bind 0.0.0.0:8090`.
# Configuration: WXJSSDK__SECTION__KEY variables, or a TOML file mounted into the
# container and named by WXJSSDK_CONFIG (see docs/operations.md, "Configuration").
# Needs BuildKit (the default builder since Docker 23) for the cache mounts below.

# ---- build ------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# Only what the build reads (.dockerignore keeps the rest, target/ in particular, out of
# the context).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The workspace's other members: cargo loads every member named in Cargo.toml, and the
# service depends on them.
COPY wechat-wire ./wechat-wire
COPY sandbox ./sandbox
# The page helper and the demo page are compiled in (include_str!).
COPY public ./public
# Dependency caching with cache mounts rather than a dummy-main layer: the crates.io
# downloads and target/ survive between builds, so a source change recompiles only this
# crate, and there is no stale-mtime trap of a pre-built dummy binary being shipped.
# target/ lives in the cache, not in the layer, so the binary is copied out of it here.
# `--locked`: exactly the Cargo.lock versions, or the build fails.
RUN --mount=type=cache,id=wx-jssdk-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=wx-jssdk-target,target=/src/target,sharing=locked \
    cargo build --release --locked \
    && install -m 0755 target/release/wx-jssdk /usr/local/bin/wx-jssdk

# ---- runtime ----------------------------------------------------------------------
# debian:bookworm-slim rather than distroless: the HEALTHCHECK needs an HTTP client in
# the image (distroless has no curl and no shell, and the binary has no probe
# subcommand), and an operator chasing "IP not whitelisted" (WeChat errcode 40164) can
# `docker exec` into it and curl WeChat from the container's own address. Same Debian
# release as the builder, so the glibc the binary was linked against is there.
FROM debian:bookworm-slim
# The binary does not read the system CA bundle (it carries Mozilla's roots, awc's
# `rustls-0_23-webpki-roots` feature in Cargo.toml); ca-certificates is for that curl
# to reach https://api.weixin.qq.com when debugging. Versions are not pinned: see
# .hadolint.yaml (DL3008).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER, and
# deploy/kubernetes/deployment.yaml names the same ids.
RUN groupadd --system --gid 10001 wx-jssdk \
    && useradd --system --uid 10001 --gid wx-jssdk --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin wx-jssdk
COPY --from=build /usr/local/bin/wx-jssdk /usr/local/bin/wx-jssdk
USER 10001:10001

# The binary's default is 127.0.0.1:8080, unreachable from outside a container.
ENV WXJSSDK__SERVER__BIND=0.0.0.0:8080 \
    RUST_LOG=info
EXPOSE 8080
# SIGTERM (Docker's default stop signal) starts actix-web's graceful shutdown: in-flight
# requests get up to 30 s. Give `docker stop` that long (`-t 35`, compose's
# stop_grace_period); its default of 10 s may cut a request waiting on WeChat.
STOPSIGNAL SIGTERM

# Liveness: /healthz answers while the process serves HTTP (whatever Redis does). The port
# is taken from WXJSSDK__SERVER__BIND, so a changed bind does not make the container
# "unhealthy" (hence a shell, for the ${...##*:}). --noproxy: a proxy set in the
# environment must not answer for us. `|| exit 1`: Docker reserves exit codes other than 0/1.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS --noproxy '*' --max-time 2 -o /dev/null http://127.0.0.1:${WXJSSDK__SERVER__BIND##*:}/healthz || exit 1"]

ENTRYPOINT ["wx-jssdk"]
