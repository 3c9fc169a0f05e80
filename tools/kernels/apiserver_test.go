package main

import (
	"bytes"
	"io"
	"net"
	"os"
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
	self, _ := os.Executable()
	want := "-netdev user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:6443-cmd:" + self + " relay 127.0.0.1:34567 -device virtio-net-pci,netdev=n0,romfile="
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

// TestRelay: what the guest writes reaches the host's server and its
// answer comes back; the relay ends when both sides have.
func TestRelay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		b, _ := io.ReadAll(c) // until the relay's CloseWrite
		c.Write(bytes.ToUpper(b))
		c.Close()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := relay(c.(*net.TCPConn), strings.NewReader("get /readyz"), &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "GET /READYZ" {
		t.Fatalf("relayed %q", out.String())
	}
}

// TestQemuArgsManyCPUsBootOnOne: a guest of over 8 CPUs boots with
// maxcpus=1 (init.sh onlines the rest); smaller ones with every CPU.
func TestQemuArgsManyCPUsBootOnOne(t *testing.T) {
	o := bootOpts{k: &kernel{Root: "/k", Release: "r"}, initrd: "/i", job: "/j", console: "/c"}
	for extra, want := range map[string]bool{"": false, "-smp 8 -m 2048": false, "-smp 64 -m 3072": true, "-smp 4 -smp cpus=192": true} {
		t.Setenv("QEMU_EXTRA_ARGS", extra)
		args := qemuArgs(o)
		i := slices.Index(args, "-append")
		if got := strings.Contains(args[i+1], " maxcpus=1"); got != want {
			t.Errorf("QEMU_EXTRA_ARGS=%q: maxcpus=1 %v, want %v (%q)", extra, got, want, args[i+1])
		}
	}
}
