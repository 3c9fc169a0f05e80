package main

import (
	"slices"
	"strings"
	"testing"
)

// TestQemuArgsNetworkOptIn: without KERNELS_APISERVER a guest has no NIC
// (the arguments of every test run); with it, exactly one restricted
// user-mode NIC forwarding the guest's apiserver address.
func TestQemuArgsNetworkOptIn(t *testing.T) {
	t.Setenv("QEMU_EXTRA_ARGS", "")
	o := bootOpts{k: &kernel{Root: "/k", Release: "r"}, initrd: "/i", job: "/j", console: "/c"}
	plain := qemuArgs(o)
	if !slices.Contains(plain, "none") || slices.Contains(plain, "-netdev") || slices.Contains(plain, "-device") {
		t.Fatalf("default guest has a network device: %q", plain)
	}
	o.apiserver = "127.0.0.1:34567"
	args := qemuArgs(o)
	if !slices.Equal(args[:len(plain)], plain) {
		t.Fatalf("opt-in changed the default arguments:\n%q\n%q", plain, args[:len(plain)])
	}
	extra := strings.Join(args[len(plain):], " ")
	want := "-netdev user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:6443-tcp:127.0.0.1:34567 -device virtio-net-pci,netdev=n0,romfile="
	if extra != want {
		t.Fatalf("opt-in arguments %q, want %q", extra, want)
	}
}

func TestAPIServerForwardChecked(t *testing.T) {
	for v, ok := range map[string]bool{"": true, "127.0.0.1:6443": true, "localhost:6443": false, "127.0.0.1": false, "127.0.0.1:0": false, "127.0.0.1:x": false} {
		t.Setenv(apiserverEnv, v)
		if _, err := apiserverForward(); (err == nil) != ok {
			t.Errorf("%s=%q: err %v", apiserverEnv, v, err)
		}
	}
}
