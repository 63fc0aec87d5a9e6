# CoreDNS for kind's node image (kindimage.py): kubeadm runs it as a non-root user on port 53 with
# only NET_BIND_SERVICE, so the binary carries that file capability, as upstream's image does.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE} AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libcap2-bin
COPY coredns /coredns
RUN setcap cap_net_bind_service=+ep /coredns

FROM scratch
COPY --from=build /coredns /coredns
USER 65532:65532
ENTRYPOINT ["/coredns"]
