# syntax=docker/dockerfile:1
#
# fly-vault's tenant image: the machine entrypoint `init` (runs as root: it
# chroots into the tenant rootfs and mounts /proc, /dev and the volume's
# persistent directories into it).
#
#   docker build -t fly-vault:latest .                       # any laptop
#   fly deploy --build-only --push -a <tenant-app>           # on Fly's builders
#   buildah bud --isolation chroot -t fly-vault:latest .     # what npm test does
#
# Everything comes from package registries inside the build (the Linux Deno
# binary is the `@deno/linux-*-glibc` npm package that `npm ci` installs),
# never from the build context; .dockerignore keeps node_modules, .git and
# local state out. The build args name the registries (public defaults).

ARG DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS build
ARG DEBIAN_MIRROR=http://deb.debian.org/debian
ARG DEBIAN_SECURITY_MIRROR=http://deb.debian.org/debian-security
ARG NPM_REGISTRY=https://registry.npmjs.org/
# Node and a C++ toolchain only to run `npm ci`: node-pty (init's PTYs) compiles here.
RUN rm -f /etc/apt/sources.list.d/*.sources \
 && printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
      "$DEBIAN_MIRROR" "$DEBIAN_MIRROR" "$DEBIAN_SECURITY_MIRROR" > /etc/apt/sources.list \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates nodejs npm python3 make g++ patchelf \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
# Behind a TLS-intercepting proxy, pass its CA as a build secret:
#   --secret id=registry_ca,src=/path/to/ca.crt   (absent: the public CAs do)
RUN --mount=type=secret,id=registry_ca \
    if [ -s /run/secrets/registry_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/registry_ca; fi \
 && npm ci --omit=dev --no-audit --no-fund --registry "$NPM_REGISTRY" \
 && install -m 0755 node_modules/@deno/linux-*-glibc/deno /usr/local/bin/deno \
 # One Deno binary (in /usr/local/bin), node-pty's compiled addon without its sources.
 && rm -rf node_modules/deno node_modules/@deno node_modules/.bin \
 && cd node_modules/node-pty \
 && rm -rf prebuilds deps third_party src scripts node-addon-api binding.gyp \
 && find build -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} + \
 && find build/Release -mindepth 1 ! -name pty.node -exec rm -rf {} + \
 # Debian's node-gyp links addons to its libnode; Deno provides Node-API itself.
 && for lib in $(patchelf --print-needed build/Release/pty.node | grep '^libnode'); do \
      patchelf --remove-needed "$lib" build/Release/pty.node; done
COPY deno.json ./
COPY bin ./bin
COPY src ./src
# Pre-fill Deno's cache so a machine's first start compiles nothing and fetches nothing.
ENV DENO_DIR=/app/.deno DENO_NO_UPDATE_CHECK=1
RUN deno cache --no-lock --config deno.json bin/fly-vault-init.ts

FROM ${DEBIAN_IMAGE}
ARG DEBIAN_MIRROR=http://deb.debian.org/debian
ARG DEBIAN_SECURITY_MIRROR=http://deb.debian.org/debian-security
# GNU tar (provisioning), util-linux + mount (unshare, nsenter, mount, pivot_root),
# ca-certificates (rootfs_url downloads over https). glibc comes with the base.
RUN rm -f /etc/apt/sources.list.d/*.sources \
 && printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
      "$DEBIAN_MIRROR" "$DEBIAN_MIRROR" "$DEBIAN_SECURITY_MIRROR" > /etc/apt/sources.list \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates tar util-linux mount \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
COPY --from=build /usr/local/bin/deno /usr/local/bin/deno
COPY --from=build /app /app
# DENO_TLS_CA_STORE=system: https (rootfs_url, the Machines API) trusts /etc/ssl/certs, so an
# image built FROM this one with an extra CA (update-ca-certificates) is honoured.
ENV DENO_DIR=/app/.deno DENO_NO_UPDATE_CHECK=1 DENO_TLS_CA_STORE=system
LABEL org.opencontainers.image.title="fly-vault tenant machine (init)" \
      org.opencontainers.image.licenses="MIT"
WORKDIR /app
EXPOSE 8443/udp
ENTRYPOINT ["/usr/local/bin/deno", "run", "-A", "--unstable-net", "--quiet", "--cached-only", "--no-lock", "--config", "/app/deno.json", "/app/bin/fly-vault-init.ts"]
