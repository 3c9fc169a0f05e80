package netlab

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
)

// BPFFS is where tests find the kernel's bpffs.
const BPFFS = "/sys/fs/bpf"

// PinDir returns a fresh directory under the bpffs for one test's pinned
// maps and links (<bpffs>/<tag>-<hex>: a bpffs subdirectory stands in for
// a mount), removed with everything pinned in it in t.Cleanup. Register
// it before whatever holds the pins, so that cleanups (last in, first
// out) close those first.
func PinDir(t testing.TB, tag string) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	dir := BPFFS + "/" + tag + "-" + hex.EncodeToString(b)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("making a pin directory (is a bpffs mounted at %s? make bpffs): %v", BPFFS, err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
