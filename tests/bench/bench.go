// Package bench is what the figure-producing tests share: whether a bench
// run was asked for (KUBESHAPER_BENCH) and how sections of a figures file
// under docs/bench are written (one JSON object, a key per section, so
// that several runs fill one file).
package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
)

// On reports whether figures are to be measured and written.
func On() bool { return os.Getenv("KUBESHAPER_BENCH") != "" }

// Write sets section of the JSON object in rel (relative to the repository
// root) to v, keeping the other sections.
func Write(t testing.TB, rel, section string, v any) {
	t.Helper()
	root, err := kubeenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, rel)
	all := map[string]any{}
	if b, err := os.ReadFile(path); err == nil {
		json.Unmarshal(b, &all)
	}
	all[section] = v
	out, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %s:\n%s", rel, section, out)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
