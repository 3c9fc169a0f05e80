package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Modules the guest loads before the tests, in dependency order with
// everything modules.dep says they need. Built-in ones are skipped.
var (
	// requiredModules must exist (as a module or built in) in every kernel.
	requiredModules = []string{
		"virtio_pci", "9pnet_virtio", "9p", "overlay", // the host's filesystem over 9p
		"veth", "sch_ingress", "cls_bpf", // pods, clsact, our filters
		"sch_fq", "sch_tbf", // pace mode and delay (EDT), tbf mode
		"cls_u32", "sch_prio", // other tools' filters and qdiscs in tests
	}
	// optionalModules are loaded where the kernel has them (tests that
	// need them skip or adapt otherwise).
	optionalModules = []string{"dummy", "ifb", "bridge", "macvlan", "ipvlan", "sch_htb", "sch_netem", "cls_matchall", "act_gact", "netkit"}
)

// modName is a module's canonical name from its file name.
func modName(path string) string {
	b := filepath.Base(path)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		b = strings.TrimSuffix(b, ext)
	}
	return strings.ReplaceAll(strings.TrimSuffix(b, ".ko"), "-", "_")
}

type modIndex struct {
	path    map[string]string   // name -> path relative to the modules dir
	deps    map[string][]string // name -> dependency names
	builtin map[string]bool
}

func readModIndex(modDir string) (*modIndex, error) {
	ix := &modIndex{path: map[string]string{}, deps: map[string][]string{}, builtin: map[string]bool{}}
	dep, err := os.ReadFile(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	ix.parseDep(string(dep))
	if b, err := os.ReadFile(filepath.Join(modDir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			ix.builtin[modName(l)] = true
		}
	}
	return ix, nil
}

func (ix *modIndex) parseDep(text string) {
	for _, line := range strings.Split(text, "\n") {
		mod, deps, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name := modName(mod)
		ix.path[name] = strings.TrimSpace(mod)
		for _, d := range strings.Fields(deps) {
			ix.deps[name] = append(ix.deps[name], modName(d))
		}
	}
}

// order returns the module paths to load for the wanted names, each
// after its dependencies, and the wanted names the kernel lacks.
func (ix *modIndex) order(want []string) (paths, missing []string) {
	seen := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		if seen[n] {
			return
		}
		seen[n] = true
		for _, d := range ix.deps[n] {
			visit(d)
		}
		paths = append(paths, ix.path[n])
	}
	for _, w := range want {
		w = strings.ReplaceAll(w, "-", "_")
		switch {
		case ix.path[w] != "":
			visit(w)
		case ix.builtin[w]:
		default:
			missing = append(missing, w)
		}
	}
	return paths, missing
}

// stageModules copies the modules to load, decompressed, into
// dst/lib/modules/<release>/ with the kernel's modules.builtin files and a
// depmod of its own (so modprobe and modinfo work in the guest), and
// returns the load order (paths relative to that dir, .ko). extra are
// required too (the opt-in network's driver).
func stageModules(k *kernel, dst string, extra []string) ([]string, error) {
	ix, err := readModIndex(k.modDir())
	if err != nil {
		return nil, err
	}
	paths, missing := ix.order(append(append([]string(nil), requiredModules...), extra...))
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s lacks modules %s (neither a module nor built in)", k.Release, strings.Join(missing, ", "))
	}
	opt, _ := ix.order(optionalModules)
	seen := map[string]bool{}
	var load []string
	outDir := filepath.Join(dst, "lib", "modules", k.Release)
	for _, p := range append(paths, opt...) {
		if seen[p] {
			continue
		}
		seen[p] = true
		ko := p
		for _, ext := range []string{".xz", ".zst", ".gz"} {
			ko = strings.TrimSuffix(ko, ext)
		}
		if err := decompressTo(filepath.Join(k.modDir(), p), filepath.Join(outDir, ko)); err != nil {
			return nil, err
		}
		load = append(load, ko)
	}
	for _, f := range []string{"modules.builtin", "modules.builtin.modinfo", "modules.order"} {
		if data, err := os.ReadFile(filepath.Join(k.modDir(), f)); err == nil {
			if err := os.WriteFile(filepath.Join(outDir, f), data, 0o644); err != nil {
				return nil, err
			}
		}
	}
	if out, err := exec.Command("depmod", "-b", dst, k.Release).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("depmod -b %s %s: %v\n%s", dst, k.Release, err, out)
	}
	return load, nil
}

// decompressTo writes the module at src (.ko, .ko.xz, .ko.zst, .ko.gz) as
// a plain .ko at dst: the guest's busybox insmod loads it as it is.
func decompressTo(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	var tool []string
	switch {
	case strings.HasSuffix(src, ".xz"):
		tool = []string{"xz", "-dc"}
	case strings.HasSuffix(src, ".zst"):
		tool = []string{"zstd", "-qdc"}
	case strings.HasSuffix(src, ".gz"):
		tool = []string{"gzip", "-dc"}
	default:
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(tool[0], append(tool[1:], src)...)
	var errb strings.Builder
	cmd.Stdout, cmd.Stderr = f, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", strings.Join(tool, " "), src, err, errb.String())
	}
	return f.Close()
}
