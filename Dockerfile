# syntax=docker/dockerfile:1
#
# docker build -t stampede .      (or: docker compose up --build)

# ---- build ---------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src

# sqlx query macros (if any) compile against the checked-in .sqlx/ data, never a live database.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never

# Dependency caching uses BuildKit cache mounts (the default builder since Docker 23 and in
# compose v2): the cargo registry and the target dir persist between builds, so a source change
# recompiles only this workspace's crates. (A stub-manifest layer would break as soon as
# Cargo.toml names [[bench]]/[[test]] targets.) The binary is copied out of the target mount,
# which is not part of the image.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin stampede \
    && install -D -m 0755 target/release/stampede /out/stampede

# ---- runtime -------------------------------------------------------------------------------
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system stampede \
    && useradd --system --gid stampede --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin stampede

COPY --from=builder /out/stampede /usr/local/bin/stampede

USER stampede
ENV BIND_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["stampede"]
CMD ["serve"]
