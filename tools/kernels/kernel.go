package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// kernel is one extracted Debian kernel in the cache.
type kernel struct {
	Line    string   `json:"line"`    // as asked: "6.1"
	Release string   `json:"release"` // uname -r: 6.1.0-56-amd64
	Package string   `json:"package"` // linux-image-6.1.0-56-amd64
	Version string   `json:"version"` // Debian version: 6.1.192-1
	Debs    []string `json:"debs"`
	Root    string   `json:"-"` // extracted tree
}

// vmlinuz and config are in /boot up to 6.x, in the modules directory in
// newer packages.
func (k *kernel) vmlinuz() string {
	return k.either(filepath.Join("boot", "vmlinuz-"+k.Release), "vmlinuz")
}

func (k *kernel) config() string {
	return k.either(filepath.Join("boot", "config-"+k.Release), "config")
}

func (k *kernel) either(boot, inModDir string) string {
	p := filepath.Join(k.Root, boot)
	if _, err := os.Stat(p); err != nil {
		if alt := filepath.Join(k.modDir(), inModDir); fileExists(alt) {
			return alt
		}
	}
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func (k *kernel) modDir() string { return filepath.Join(k.Root, "lib", "modules", k.Release) }

// short is the upstream version for tables: 6.1.192 from 6.1.192-1.
func (k *kernel) short() string {
	v, _, _ := strings.Cut(k.Version, "-")
	return v
}

// ensureKernel returns the cached kernel for a line, downloading and
// extracting it on first use. A line resolves once (cache/lines/<line>);
// refresh re-resolves it against the current package lists.
func ensureKernel(cache, line string, refresh bool) (*kernel, error) {
	linePath := filepath.Join(cache, "lines", line+".json")
	if !refresh {
		if k, err := loadKernel(cache, linePath); err == nil {
			return k, nil
		}
	}
	a, err := newApt(filepath.Join(cache, "apt"))
	if err != nil {
		return nil, err
	}
	maxAge := 24 * time.Hour
	if refresh {
		maxAge = 0
	}
	if err := a.update(maxAge); err != nil {
		return nil, err
	}
	image, version, pkgs, err := a.resolve(line)
	if err != nil {
		// Lists may predate a new ABI: one fresh update, then give up.
		if maxAge == 0 {
			return nil, err
		}
		if err2 := a.update(0); err2 != nil {
			return nil, err2
		}
		if image, version, pkgs, err = a.resolve(line); err != nil {
			return nil, err
		}
	}
	release := strings.TrimPrefix(image, "linux-image-")
	k := &kernel{Line: line, Release: release, Package: image, Version: version, Root: filepath.Join(cache, "k", release, "root")}
	if _, err := os.Stat(filepath.Join(cache, "k", release, "kernel.json")); err != nil {
		if err := fetchKernel(a, cache, k, pkgs); err != nil {
			return nil, err
		}
	} else {
		logf("%s: %s already extracted", line, release)
	}
	meta, _ := json.MarshalIndent(k, "", "  ")
	if err := os.MkdirAll(filepath.Dir(linePath), 0o755); err != nil {
		return nil, err
	}
	return k, os.WriteFile(linePath, meta, 0o644)
}

func loadKernel(cache, path string) (*kernel, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, errNoKernel
	}
	var k kernel
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(cache, "k", k.Release, "kernel.json")); err != nil {
		return nil, errNoKernel
	}
	k.Root = filepath.Join(cache, "k", k.Release, "root")
	return &k, nil
}

// fetchKernel downloads the packages, extracts them (dpkg-deb -x, nothing
// is installed) and builds modules.dep, which the .deb does not ship.
func fetchKernel(a *apt, cache string, k *kernel, pkgs []string) error {
	start := time.Now()
	debDir := filepath.Join(cache, "debs")
	if err := os.MkdirAll(debDir, 0o755); err != nil {
		return err
	}
	logf("%s: downloading %s (%s)", k.Line, strings.Join(pkgs, " "), k.Version)
	debs, err := a.download(debDir, pkgs)
	if err != nil {
		return err
	}
	dir := filepath.Join(cache, "k", k.Release)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(k.Root, 0o755); err != nil {
		return err
	}
	for _, d := range debs {
		k.Debs = append(k.Debs, filepath.Base(d))
		if out, err := exec.Command("dpkg-deb", "-x", d, k.Root).CombinedOutput(); err != nil {
			return fmt.Errorf("dpkg-deb -x %s: %v\n%s", d, err, out)
		}
	}
	// Merged-/usr packages put modules under usr/lib: give depmod and the
	// rest of this tool the classic path.
	if _, err := os.Stat(k.modDir()); err != nil {
		alt := filepath.Join(k.Root, "usr", "lib", "modules", k.Release)
		if _, err2 := os.Stat(alt); err2 != nil {
			return fmt.Errorf("%s: no modules at lib/modules/%s or usr/lib/modules/%s", k.Package, k.Release, k.Release)
		}
		if err := os.MkdirAll(filepath.Join(k.Root, "lib", "modules"), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(alt, k.modDir()); err != nil {
			return err
		}
	}
	if _, err := os.Stat(k.vmlinuz()); err != nil {
		return fmt.Errorf("%s: no boot/vmlinuz-%s nor modules/%s/vmlinuz in %s", k.Package, k.Release, k.Release, strings.Join(k.Debs, " "))
	}
	if !fileExists(filepath.Join(k.modDir(), "modules.builtin")) {
		return fmt.Errorf("%s: no modules.builtin in %s", k.Package, strings.Join(k.Debs, " "))
	}
	if out, err := exec.Command("depmod", "-b", k.Root, k.Release).CombinedOutput(); err != nil {
		return fmt.Errorf("depmod -b %s %s: %v\n%s", k.Root, k.Release, err, out)
	}
	for _, d := range debs {
		os.Remove(d) // the extracted tree is the cache
	}
	meta, _ := json.MarshalIndent(k, "", "  ")
	logf("%s: %s extracted in %s", k.Line, k.Release, time.Since(start).Round(time.Second))
	return os.WriteFile(filepath.Join(dir, "kernel.json"), meta, 0o644)
}
