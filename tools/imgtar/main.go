// Command imgtar writes a single-layer container image as a docker-archive
// tar (the format of `docker save`), without an engine or a registry: one
// layer tar holding the given files, an image config JSON naming the
// entrypoint, and manifest.json tying them to the tags. containerd imports
// it with `ctr -n k8s.io images import`.
//
//	imgtar -o agent.tar -tag kubeshaper/agent:dev \
//	  -file bin/static/kubeshaper-agent:/usr/local/bin/kubeshaper-agent \
//	  -dir /tmp -entrypoint /usr/local/bin/kubeshaper-agent
//
// The output is byte-for-byte reproducible (fixed times, sorted entries);
// the image ID (sha256 of the config) is printed on stdout, so callers can
// derive a content-addressed tag from it.
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// epoch is every entry's mtime and the image's creation time: reproducible.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

type file struct {
	src, dst string
}

func main() {
	var tags, files, dirs, env, entry, cmd multi
	out := flag.String("o", "", "output tar")
	flag.Var(&tags, "tag", "image name:tag (repeatable)")
	flag.Var(&files, "file", "SRC:DST, a file copied into the image with mode 0755 (repeatable)")
	flag.Var(&dirs, "dir", "an empty directory to create, mode 1777 for /tmp, else 0755 (repeatable)")
	flag.Var(&env, "env", "KEY=VALUE (repeatable)")
	flag.Var(&entry, "entrypoint", "entrypoint word (repeatable, in order)")
	flag.Var(&cmd, "cmd", "cmd word (repeatable, in order)")
	flag.Parse()
	if *out == "" || len(tags) == 0 || len(files) == 0 {
		fmt.Fprintln(os.Stderr, "imgtar: -o, -tag and -file are required")
		flag.Usage()
		os.Exit(2)
	}
	var fl []file
	for _, f := range files {
		src, dst, ok := strings.Cut(f, ":")
		if !ok || !strings.HasPrefix(dst, "/") {
			fatalf("-file %q: want SRC:/ABS/DST", f)
		}
		fl = append(fl, file{src, dst})
	}
	id, err := build(*out, tags, fl, dirs, env, entry, cmd)
	if err != nil {
		fatalf("%v", err)
	}
	fmt.Println(id)
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "imgtar: "+format+"\n", a...)
	os.Exit(1)
}

func build(out string, tags []string, files []file, dirs, env, entry, cmd []string) (string, error) {
	layer, err := layerTar(files, dirs)
	if err != nil {
		return "", err
	}
	layerSum := sha256.Sum256(layer)
	layerHex := hex.EncodeToString(layerSum[:])

	if len(env) == 0 {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	cfg := map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config": map[string]any{
			"Env":        env,
			"Entrypoint": nilIfEmpty(entry),
			"Cmd":        nilIfEmpty(cmd),
			"WorkingDir": "/",
		},
		"rootfs": map[string]any{
			"type":     "layers",
			"diff_ids": []string{"sha256:" + layerHex},
		},
		"history": []map[string]any{{
			"created":    epoch.Format(time.RFC3339),
			"created_by": "kubeshaper tools/imgtar",
		}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	cfgSum := sha256.Sum256(cfgJSON)
	cfgHex := hex.EncodeToString(cfgSum[:])

	manifest, err := json.Marshal([]map[string]any{{
		"Config":   cfgHex + ".json",
		"RepoTags": tags,
		"Layers":   []string{layerHex + "/layer.tar"},
	}})
	if err != nil {
		return "", err
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: layerHex + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return "", err
	}
	for _, e := range []struct {
		name string
		data []byte
	}{
		{layerHex + "/layer.tar", layer},
		{cfgHex + ".json", cfgJSON},
		{"manifest.json", manifest},
	} {
		if err := add(e.name, e.data); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	return "sha256:" + cfgHex, nil
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// layerTar makes the one layer: every parent directory, the empty dirs
// asked for, and the files (mode 0755, owned by root), in sorted order.
func layerTar(files []file, dirs []string) ([]byte, error) {
	type entry struct {
		dir  bool
		mode int64
		src  string
	}
	entries := map[string]entry{}
	addParents := func(p string) {
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = entry{dir: true, mode: 0o755}
			}
		}
	}
	for _, d := range dirs {
		d = path.Clean("/" + d)
		mode := int64(0o755)
		if d == "/tmp" {
			mode = 0o1777
		}
		entries[d] = entry{dir: true, mode: mode}
		addParents(d)
	}
	for _, f := range files {
		dst := path.Clean(f.dst)
		entries[dst] = entry{mode: 0o755, src: f.src}
		addParents(dst)
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := entries[n]
		name := strings.TrimPrefix(n, "/")
		if e.dir {
			if err := tw.WriteHeader(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: e.mode, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
			continue
		}
		f, err := os.Open(e.src)
		if err != nil {
			return nil, err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		if !st.Mode().IsRegular() {
			f.Close()
			return nil, fmt.Errorf("%s is not a regular file", e.src)
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: e.mode, Size: st.Size(), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			f.Close()
			return nil, err
		}
		_, err = io.Copy(tw, f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
