# kube-proxy for kind's node image (kindimage.py): the binary the harness builds, with Debian's
# iptables, nftables and conntrack, as upstream's distroless-iptables image has them.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables nftables conntrack \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
COPY kube-proxy /usr/local/bin/kube-proxy
