package main

import (
	"fmt"
	"io"
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
// The forward runs relay (this tool's `relay HOST:PORT`) for each
// connection the guest opens: a guestfwd to a chardev instead would be
// one host connection, opened at start, shared by every guest connection
// in turn. romfile= skips the PXE option ROM (nothing boots from the
// network).
func netArgs(fwd, relay string) []string {
	ip, port, _ := net.SplitHostPort(GuestAPIServerAddr)
	return []string{
		"-netdev", fmt.Sprintf("user,id=n0,restrict=on,guestfwd=tcp:%s:%s-cmd:%s relay %s", ip, port, relay, fwd),
		"-device", "virtio-net-pci,netdev=n0,romfile=",
	}
}

// cmdRelay is `kernels relay HOST:PORT`, what the guest's forward runs for
// a connection: its stdin and stdout are the guest's socket (and so is
// stderr: nothing may be written there), copied to and from a new TCP
// connection to HOST:PORT.
func cmdRelay(args []string) error {
	if len(args) != 1 {
		return errUsage
	}
	c, err := net.Dial("tcp", args[0])
	if err != nil {
		return err
	}
	return relay(c.(*net.TCPConn), os.Stdin, os.Stdout)
}

// relay copies in to c and c to out until both directions end.
func relay(c *net.TCPConn, in io.Reader, out io.Writer) error {
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, in)
		c.CloseWrite()
		done <- err
	}()
	_, err := io.Copy(out, c)
	c.Close()
	if err2 := <-done; err == nil {
		err = err2
	}
	return err
}
