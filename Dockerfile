# The gateway as a small image: built in a Rust image, run from Debian slim as a
# non-root user with its data on a volume.
#   docker build -t wagate .    docker run -p 3000:3000 -v wagate-data:/data -e JWT_SECRET=… wagate

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin wagate

FROM debian:bookworm-slim
# ca-certificates: TLS to WhatsApp, Meta and webhook receivers; wget: the healthcheck.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates wget \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin wagate \
    && mkdir -p /data && chown wagate /data
COPY --from=build /src/target/release/wagate /usr/local/bin/wagate
USER wagate
ENV DATA_DIR=/data HOST=0.0.0.0 PORT=3000
EXPOSE 3000
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD wget -qO- http://127.0.0.1:3000/healthz || exit 1
CMD ["wagate"]
