# syntax=docker/dockerfile:1
# The a2a image: the operator (`a2a operator`) and every other verb, as a static binary on a
# distroless base, running as a non-root user.

FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY examples examples
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin a2a --bin a2a-log-relay \
 && strip target/x86_64-unknown-linux-musl/release/a2a target/x86_64-unknown-linux-musl/release/a2a-log-relay

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/a2a /usr/local/bin/a2a
# The agents' log relay, which `a2a serve` looks for beside `a2a`.
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/a2a-log-relay /usr/local/bin/a2a-log-relay
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/a2a"]
CMD ["operator"]
