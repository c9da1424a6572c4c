# tidepool container image: build with the Rust toolchain, run on a small Debian base as a
# non-root user. The configuration is a mounted file (see docs/deploy.md); it must say
#   [proxy]
#   listen = "0.0.0.0:5432"
# so that the proxy is reachable from outside the container.
#
#   docker build -t tidepool .
#   docker run -p 5432:5432 -v $PWD/pool.toml:/etc/tidepool/pool.toml:ro tidepool

FROM rust:1-slim-bookworm AS builder
WORKDIR /build
# The manifest names the benches, so cargo wants them present even though it does not build them.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin tidepool \
    && strip target/release/tidepool

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin tidepool
COPY --from=builder /build/target/release/tidepool /usr/local/bin/tidepool
USER 10001:10001
# 5432: PostgreSQL clients. 9930: metrics (`[metrics] listen = "0.0.0.0:9930"`, off by default).
EXPOSE 5432 9930
# SIGTERM stops accepting and waits for clients (as PgBouncer 1.23+; see README, "Shutdown and
# upgrade"); set proxy.sigterm_timeout so that it ends, and give the container a
# termination grace period longer than proxy.shutdown_timeout.
STOPSIGNAL SIGTERM
# Healthy = /readyz answers 200 when [metrics] listen is set (listening, a primary known; 503
# while draining), else the client port answers the PostgreSQL protocol.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/tidepool", "health", "--config", "/etc/tidepool/pool.toml", "--timeout", "4"]
ENTRYPOINT ["/usr/local/bin/tidepool"]
CMD ["--config", "/etc/tidepool/pool.toml"]
