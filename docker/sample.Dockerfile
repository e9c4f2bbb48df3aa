# The sample stateful service and its load generator as a static, non-root image.
#
# With internet access (Docker 23+ builds with BuildKit, which skips the unused `host` stage):
#     docker build -f docker/sample.Dockerfile -t locus/sample:dev .
# builds in the Rust image with the musl target and ships the binaries in distroless.
# (With Docker's legacy builder, add --target image.)
#
# Without registries (how e2e/kind/images.sh builds it): static binaries built on the host, in a
# build context holding only locus-sample, locus-loadgen and rootfs/ (passwd, group, nsswitch.conf):
#     docker build --target host -f docker/sample.Dockerfile -t locus/sample:dev <context>

FROM scratch AS host
COPY rootfs/ /
COPY locus-sample locus-loadgen /
USER 65532:65532
ENTRYPOINT ["/locus-sample"]

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p locus-examples --bins

FROM gcr.io/distroless/static-debian12:nonroot AS image
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/locus-sample /locus-sample
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/locus-loadgen /locus-loadgen
USER 65532:65532
ENTRYPOINT ["/locus-sample"]
