# The Locus operator as a static, non-root image (for users with Docker; see `make kind-e2e`).
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p locus-operator --bin locus-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/locus-operator /locus-operator
USER 65532:65532
ENTRYPOINT ["/locus-operator"]
