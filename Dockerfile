# One build, one small image per deployable: `docker build --target command-side .` (or
# payment, projector, query-side, policies, event-store). docker-compose.yml builds them all.
# Each image has a HEALTHCHECK on its default port for plain `docker run`; docker-compose.yml
# sets its own, and Kubernetes ignores them for its probes.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p event-store -p command-side -p payment -p projector -p query-side -p policies \
 && mkdir -p /out \
 && cp target/release/event-store target/release/command-side target/release/payment \
       target/release/projector target/release/query-side target/release/policies /out/

# Debian slim with CA certificates (TLS to KurrentDB, PostgreSQL, the OIDC provider and each
# other), curl for health checks, and an unprivileged user.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin park
USER 10001:10001
ENV RUST_LOG=info

FROM runtime AS command-side
COPY --from=build /out/command-side /usr/local/bin/
ENV COMMAND_LISTEN=0.0.0.0:50051
EXPOSE 50051
# A TCP check: it holds with or without TLS (TLS_CERT_FILE), and needs no token.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["bash", "-c", "</dev/tcp/127.0.0.1/50051"]
ENTRYPOINT ["command-side"]

FROM runtime AS payment
COPY --from=build /out/payment /usr/local/bin/
ENV PAYMENT_LISTEN=0.0.0.0:50052
EXPOSE 50052
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["bash", "-c", "</dev/tcp/127.0.0.1/50052"]
ENTRYPOINT ["payment"]

FROM runtime AS projector
COPY --from=build /out/projector /usr/local/bin/
ENV METRICS_LISTEN=0.0.0.0:9091
EXPOSE 9091
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["curl", "-fsS", "http://127.0.0.1:9091/healthz"]
ENTRYPOINT ["projector"]

FROM runtime AS query-side
COPY --from=build /out/query-side /usr/local/bin/
ENV QUERY_LISTEN=0.0.0.0:8080
EXPOSE 8080
# Plain HTTP, else HTTPS when it serves TLS (TLS_CERT_FILE); -k only for this loopback check.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || curl -fsSk https://127.0.0.1:8080/healthz
ENTRYPOINT ["query-side"]

FROM runtime AS policies
COPY --from=build /out/policies /usr/local/bin/
ENV METRICS_LISTEN=0.0.0.0:9092
EXPOSE 9092
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["curl", "-fsS", "http://127.0.0.1:9092/healthz"]
ENTRYPOINT ["policies"]

FROM runtime AS event-store
COPY --from=build /out/event-store /usr/local/bin/
ENV EVENT_STORE_LISTEN=0.0.0.0:2113 EVENT_STORE_DATA_DIR=/data
USER root
RUN mkdir /data && chown 10001:10001 /data
USER 10001:10001
VOLUME /data
EXPOSE 2113
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["bash", "-c", "</dev/tcp/127.0.0.1/2113"]
ENTRYPOINT ["event-store"]
