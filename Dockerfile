# The oom-probe image: one static binary (the eBPF object embedded), nothing else.
#
#   docker build -t oom-probe .
#       the full build: the build stage runs `cargo xtask static`, the same
#       set-up and build as `cargo xtask test` (toolchains, bpf-linker, musl).
#   docker build --target prebuilt -t oom-probe .
#       the same image from a static binary built already (`cargo xtask
#       static`, or the kernel matrix's); `--build-arg BINARY=path` inside
#       the context names another one. The test suite builds this target.
#   `cargo xtask dist` builds the `prebuilt` target into target/dist as an
#       OCI archive, with VERSION, REVISION and SOURCE set from the binary
#       and the git checkout.

# What every variant of the image is: the binary's entrypoint and the agent,
# labelled with where it comes from (OCI annotation keys).
FROM scratch AS runtime
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="oom-probe" \
      org.opencontainers.image.description="Reports every Linux OOM kill, with its pod and container, from eBPF." \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENTRYPOINT ["/oom-probe"]
CMD ["run"]

FROM runtime AS prebuilt
ARG BINARY=target/x86_64-unknown-linux-musl/release/oom-probe
COPY ${BINARY} /oom-probe

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo xtask static --out /oom-probe

FROM runtime
COPY --from=build /oom-probe /oom-probe
