# kubeshaper/agent: the node agent and the node CLI, static binaries on an
# empty base. For users with a container engine:
#
#   docker build -t kubeshaper/agent:dev .       (or podman build, buildah…)
#   kubectl apply -k manifests/
#
# The BPF object is committed (pkg/datapath/*_bpfel.o), so no clang is
# needed; CGO is off, so the binaries need no libc. (The local cluster of
# `make demo` / `make e2e` builds the same image without an engine:
# tools/cluster/images.sh.)
ARG GO_VERSION=1.26
FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/kubeshaper-agent ./cmd/kubeshaper-agent && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/kubeshaper ./cmd/kubeshaper

FROM scratch
COPY --from=build /out/kubeshaper-agent /out/kubeshaper /usr/local/bin/
# The agent runs as root with a few capabilities (manifests/daemonset.yaml);
# the root filesystem can be read-only: it writes nothing.
ENTRYPOINT ["/usr/local/bin/kubeshaper-agent"]
