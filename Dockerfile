# syntax=docker/dockerfile:1
#
# The mfa-operator image: one static binary on distroless, running as uid 65532.
#
#   docker build -t ghcr.io/mfa-operator/mfa-operator:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... --push .
#
# The builder is Alpine, whose Rust target is musl: the binary (aws-lc-rs included) is
# linked statically and needs no libc at run time, so the runtime image has no shell,
# no package manager and nothing but the binary, CA certificates and /etc/passwd. The
# build stage runs on the target platform (no cross-compiling), so multi-arch builds
# need QEMU or native builders.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS build
# musl-dev: crt and libc for static linking; linux-headers, perl, make, cmake: aws-lc-sys
# (the TLS crypto of both the AWS SDK and kube) compiles AWS-LC from C.
RUN apk add --no-cache musl-dev linux-headers perl make cmake
WORKDIR /src
# Only what `cargo build` reads: the manifest (its [[bench]] must exist), the lock
# file and the sources.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY src ./src
# target/ is a cache mount (kept between builds, not in the layer), so the binary is
# copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mfa-operator && \
    cp target/release/mfa-operator /mfa-operator
# The runtime image has no libc: fail here, not at run time, if the binary is not static.
RUN if ldd /mfa-operator 2>/dev/null | grep -q '=>'; then \
        echo 'mfa-operator is dynamically linked' >&2; ldd /mfa-operator >&2; exit 1; \
    fi

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="mfa-operator" \
      org.opencontainers.image.description="Kubernetes operator that enrols AWS IAM users in virtual MFA" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /mfa-operator /mfa-operator
# distroless's nonroot user; the chart runs the pod as the same uid/gid.
USER 65532:65532
# /metrics, /healthz, /readyz (--metrics-address, default 0.0.0.0:8080)
EXPOSE 8080
ENTRYPOINT ["/mfa-operator"]
CMD ["run"]
