# Multi-stage: build a static oom-probe (eBPF object embedded), ship only it.
# docker build -t oom-probe .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler \
 && rustup toolchain install nightly --profile minimal --component rust-src \
 && rustup target add x86_64-unknown-linux-musl \
 && cargo xtask setup \
 && cargo build --release --locked --package oom-probe --target x86_64-unknown-linux-musl

FROM scratch
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/oom-probe /oom-probe
ENTRYPOINT ["/oom-probe"]
CMD ["run"]
