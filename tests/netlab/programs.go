package netlab

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// ProgramDir is a test node's admin program directory (--program-dir, the
// ConfigMap in a cluster): the shipped example programs and one the
// verifier rejects, copied into a temporary directory.
func ProgramDir(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(file), "..", "..")
	dir := t.TempDir()
	for name, src := range map[string]string{
		"drop_port.o":    "bpf/examples/drop_port.o",
		"dscp.o":         "bpf/examples/dscp.o",
		"bad_verifier.o": "pkg/datapath/testdata/bad_verifier.o",
	} {
		b, err := os.ReadFile(filepath.Join(repo, src))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
