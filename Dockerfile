# Two stages: build the release binary, then run it on a slim Debian with no toolchain.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin cmek-console

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/cmek-console cmek
COPY --from=build /src/target/release/cmek-console /usr/local/bin/cmek-console
USER cmek
WORKDIR /var/lib/cmek-console
ENV CMEK_LISTEN=0.0.0.0:8080 CMEK_DATA_DIR=/var/lib/cmek-console/data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD ["/bin/sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"]
ENTRYPOINT ["/usr/local/bin/cmek-console"]
CMD ["serve"]
