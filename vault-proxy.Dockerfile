# syntax=docker/dockerfile:1
#
# fly-vault's vault-proxy image: the UDP router that sends each client's
# QUIC connection to its tenant machine over 6PN.
#
#   docker build -f vault-proxy.Dockerfile -t vault-proxy:latest .
#   fly deploy --build-only --push -a <proxy-app>   (fly.toml: dockerfile = "vault-proxy.Dockerfile")
#   buildah bud --isolation chroot -f vault-proxy.Dockerfile -t vault-proxy:latest .
#
# Dependencies come from package registries inside the build (the Linux Deno
# binary is the `@deno/linux-*-glibc` npm package), never from the build
# context. The build args name the registries (public defaults).

ARG DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS build
ARG DEBIAN_MIRROR=http://deb.debian.org/debian
ARG DEBIAN_SECURITY_MIRROR=http://deb.debian.org/debian-security
ARG NPM_REGISTRY=https://registry.npmjs.org/
RUN rm -f /etc/apt/sources.list.d/*.sources \
 && printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
      "$DEBIAN_MIRROR" "$DEBIAN_MIRROR" "$DEBIAN_SECURITY_MIRROR" > /etc/apt/sources.list \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: the proxy loads no native addon (node-pty is init's), and the
# Deno binary is taken straight from its platform package.
# Behind a TLS-intercepting proxy, pass its CA as a build secret:
#   --secret id=registry_ca,src=/path/to/ca.crt   (absent: the public CAs do)
RUN --mount=type=secret,id=registry_ca \
    if [ -s /run/secrets/registry_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/registry_ca; fi \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --registry "$NPM_REGISTRY" \
 && install -m 0755 node_modules/@deno/linux-*-glibc/deno /usr/local/bin/deno \
 && rm -rf node_modules/deno node_modules/@deno node_modules/node-pty node_modules/.bin
COPY deno.json ./
COPY bin ./bin
COPY src ./src
ENV DENO_DIR=/app/.deno DENO_NO_UPDATE_CHECK=1
RUN deno cache --no-lock --config deno.json bin/vault-proxy.ts

FROM ${DEBIAN_IMAGE}
ARG DEBIAN_MIRROR=http://deb.debian.org/debian
ARG DEBIAN_SECURITY_MIRROR=http://deb.debian.org/debian-security
# ca-certificates: the Machines API resolver talks https to api.machines.dev.
RUN rm -f /etc/apt/sources.list.d/*.sources \
 && printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
      "$DEBIAN_MIRROR" "$DEBIAN_MIRROR" "$DEBIAN_SECURITY_MIRROR" > /etc/apt/sources.list \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
COPY --from=build /usr/local/bin/deno /usr/local/bin/deno
COPY --from=build /app /app
# DENO_TLS_CA_STORE=system: https (rootfs_url, the Machines API) trusts /etc/ssl/certs, so an
# image built FROM this one with an extra CA (update-ca-certificates) is honoured.
ENV DENO_DIR=/app/.deno DENO_NO_UPDATE_CHECK=1 DENO_TLS_CA_STORE=system
LABEL org.opencontainers.image.title="fly-vault vault-proxy" \
      org.opencontainers.image.licenses="MIT"
WORKDIR /app
# Root only to bind the public port (443 by default); it reads no file but its own.
EXPOSE 443/udp
ENTRYPOINT ["/usr/local/bin/deno", "run", "-A", "--unstable-net", "--quiet", "--cached-only", "--no-lock", "--config", "/app/deno.json", "/app/bin/vault-proxy.ts"]
