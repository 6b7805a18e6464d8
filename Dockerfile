# The escalation-queue reader image (docs/OPERATIONS.md, "Deployment").
#
#   docker build -t escalation-queue .
#   docker run -d -v eq-data:/var/lib/escalation-queue -e GROUNDLIGHT_API_TOKEN=... escalation-queue
#   docker run --rm escalation-queue demo

# --- build: the workspace, release profile, exactly the locked dependencies ---
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Only what the build needs (the root manifest names benches/wal_report.rs, so it comes too).
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY wal wal
COPY worker worker
COPY bin bin
COPY benches benches
RUN cargo build --release --locked -p escalation-queue-cli \
 && install -D -m 0755 target/release/escalation-queue /out/escalation-queue

# --- run: a slim image, an unprivileged user, the queue on a volume ---
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/escalation-queue escalation \
 && install -d -m 0700 -o escalation -g escalation /var/lib/escalation-queue
COPY --from=build /out/escalation-queue /usr/local/bin/escalation-queue
USER escalation
ENV ESCALATION_QUEUE_DIR=/var/lib/escalation-queue
VOLUME /var/lib/escalation-queue
# Inside a container loopback is unreachable for probes: serve status on every interface
# of the container (publish or expose the port deliberately).
EXPOSE 8787
ENTRYPOINT ["escalation-queue"]
CMD ["reader", "--status-addr", "0.0.0.0:8787"]
