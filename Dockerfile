# sip-teleport images, from Debian packages only. NOT built in CI (no Docker engine there):
# CI validates docker-compose.yml with `docker-compose config` and proves the npm tarball this
# image installs (test/deploy/pack.test.ts).
#
#   docker build -t sip-teleport .                      # the agent (listen, migrate, vm, console)
#   docker build -t sip-teleport-proxy --target proxy . # Kamailio with deploy/kamailio/kamailio.cfg
#
# Node >= 20.19 comes from Debian 13 (trixie); Debian 12's nodejs is 18. Both ends of a migration
# must run the same QEMU version: do not mix this image with a Debian 12 host's QEMU 7.2.

# 1. Build the TypeScript and pack it exactly as `npm pack` does for the registry.
FROM debian:trixie-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json index.ts README.md ./
COPY agents agents
COPY lib lib
COPY nrdl nrdl
COPY bench bench
COPY test/testbed test/testbed
COPY docs docs
COPY deploy deploy
RUN npm pack --pack-destination /tmp \
 && mkdir -p /opt/sip-teleport \
 && npm install --prefix /opt/sip-teleport --omit=dev --no-audit --no-fund /tmp/sip-teleport-*.tgz
# The switchover's MAC claim helper, built here where there is a compiler, named as the agent looks it up
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev \
 && pkg=/opt/sip-teleport/node_modules/sip-teleport && mkdir -p $pkg/.cache/bin \
 && gcc -O2 -Wall -o $pkg/.cache/bin/host-announce-$(sha256sum lib/net/host-announce.c | cut -c1-12) lib/net/host-announce.c

# 2. Runtime: Node, QEMU and the tools for taps; no compiler, no npm, no sources.
FROM debian:trixie-slim AS agent
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs qemu-system-x86 iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/sip-teleport /opt/sip-teleport
RUN ln -s /opt/sip-teleport/node_modules/sip-teleport/dist/agents/cli.js /usr/local/bin/sip-teleport \
 && mkdir -p /etc/sip-teleport /var/lib/sip-teleport /run/sip-teleport
ENTRYPOINT ["sip-teleport"]
CMD ["--help"]

# 3. The proxy/registrar: Debian 12's Kamailio, the version the test suite runs the same config with.
FROM debian:bookworm-slim AS proxy
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends kamailio \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/kamailio/kamailio.cfg /etc/kamailio/kamailio.cfg
ENTRYPOINT ["kamailio", "-f", "/etc/kamailio/kamailio.cfg", "-DD", "-E", "-Y", "/tmp", "-w", "/tmp"]

# The default target is the agent.
FROM agent
