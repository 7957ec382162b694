# sluice: stream rows from MySQL/MariaDB into PostgreSQL.
#
#   docker build -t sluice .
#   docker run --rm sluice --help
#
# Works with the classic builder and BuildKit (no BuildKit-only syntax).

# ---- build ------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
# The whole context (filtered by .dockerignore): the workspace manifests may
# reference any of src/, entities/, migration/, tests/, benches/.
COPY . .
# Stripped on install: 110 MB with symbols, a fraction without.
RUN cargo build --release --locked --bin sluice \
 && install -D -s -m 0755 target/release/sluice /out/sluice

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates tracks the bookworm security updates; not pinned on purpose.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid sluice --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin sluice
COPY --from=builder /out/sluice /usr/local/bin/sluice
# hadolint ignore=DL3066
USER sluice
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run"]
