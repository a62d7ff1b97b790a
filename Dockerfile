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
#
# Both base images are pinned by digest: the tag is for people, the digest is what is
# pulled, so a re-pushed tag cannot change the image. Each digest is a multi-platform
# image index (linux/amd64 and linux/arm64 among its platforms). The project's machines
# cannot pull images, so the digests come from public records, not from a pull:
#   - rust:1.95.0-alpine3.23: Docker Official Images' own record (github.com/
#     docker-library/repo-info, repos/rust/remote/1-alpine3.23.md): Rust 1.95.0 on
#     Alpine 3.23.4, built 2026-04-17.
#   - distroless static-debian12:nonroot: the index Renovate moved to on 2026-08-03
#     (aef9602 -> f5b485e, github.com/bug-ops/zeph pull 6717), the same full digest as
#     pinned under that tag by other public projects.
# Check them before a release build, and update both the same way (then say so in
# CHANGELOG.md):
#   docker buildx imagetools inspect rust:1.95.0-alpine3.23
#   docker buildx imagetools inspect gcr.io/distroless/static-debian12:nonroot
# (or `crane digest IMAGE`). The `Digest:` line is the index digest to put after `@`.

FROM rust:1.95.0-alpine3.23@sha256:606fd313a0f49743ee2a7bd49a0914bab7deedb12791f3a846a34a4711db7ed2 AS build
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

FROM gcr.io/distroless/static-debian12:nonroot@sha256:f5b485ea962d9bd1186b2f6b3a061191539b905b82ec395de78cbfae51f20e35
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
