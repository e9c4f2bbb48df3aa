# The Locus operator as a static, non-root image.
#
# With internet access (Docker 23+ builds with BuildKit, which skips the unused `host` stage):
#     docker build -f docker/operator.Dockerfile -t locus/operator:dev .
# builds in the Rust image with the musl target and ships the binary in distroless.
# (With Docker's legacy builder, add --target image.)
#
# Without registries (how e2e/kind/images.sh builds it): a static binary built on the host,
# in a build context holding only locus-operator and rootfs/ (passwd, group, nsswitch.conf):
#     docker build --target host -f docker/operator.Dockerfile -t locus/operator:dev <context>

FROM scratch AS host
COPY rootfs/ /
COPY locus-operator /locus-operator
USER 65532:65532
ENTRYPOINT ["/locus-operator"]

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p locus-operator --bin locus-operator

FROM gcr.io/distroless/static-debian12:nonroot AS image
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/locus-operator /locus-operator
USER 65532:65532
ENTRYPOINT ["/locus-operator"]
