package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
)

// The opt-in network of a guest (KERNELS_APISERVER=HOST:PORT, used by
// tools/bench/agentguest to run the agent in a many-CPU guest against a
// kube-apiserver on the host): one virtio NIC on qemu's user-mode network.
// Slirp is a userspace process, so nothing on the host's network changes;
// restrict=on gives the guest no way out except the one forward, which
// connects the guest's 10.0.2.100:6443 to HOST:PORT as seen from the host.
// The guest configures its eth0 (10.0.2.15/24) itself. Without the
// variable a guest has no NIC at all (-nic none), as every test run has.
const (
	apiserverEnv       = "KERNELS_APISERVER"
	GuestAPIServerAddr = "10.0.2.100:6443"
)

// netModules are loaded in guests with the opt-in network.
var netModules = []string{"virtio_net"}

// apiserverForward returns KERNELS_APISERVER checked ("" when unset).
func apiserverForward() (string, error) {
	v := os.Getenv(apiserverEnv)
	if v == "" {
		return "", nil
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", fmt.Errorf("%s=%q: want HOST:PORT: %w", apiserverEnv, v, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return "", fmt.Errorf("%s=%q: bad port", apiserverEnv, v)
	}
	if net.ParseIP(host) == nil {
		return "", fmt.Errorf("%s=%q: HOST must be an IP address", apiserverEnv, v)
	}
	return v, nil
}

// netArgs are qemu's arguments for the NIC forwarding to fwd (HOST:PORT).
// romfile= skips the PXE option ROM (nothing boots from the network).
func netArgs(fwd string) []string {
	ip, port, _ := net.SplitHostPort(GuestAPIServerAddr)
	return []string{
		"-netdev", fmt.Sprintf("user,id=n0,restrict=on,guestfwd=tcp:%s:%s-tcp:%s", ip, port, fwd),
		"-device", "virtio-net-pci,netdev=n0,romfile=",
	}
}
