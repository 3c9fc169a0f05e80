package main

import (
	_ "embed"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed init.sh
var initScript []byte

// busyboxPath is Debian's busybox-static (the guest has no libc of its own
// until the host's root is mounted).
const busyboxPath = "/bin/busybox"

// buildInitramfs writes k's initramfs (newc cpio, uncompressed): busybox,
// /init, the decompressed modules with their load order and the kernel's
// config (and the required modules extra). Test binaries are not in it: the guest reads them, and the
// repository, from the host over 9p.
func buildInitramfs(k *kernel, out string, extra []string) error {
	stage, err := os.MkdirTemp(filepath.Dir(out), "stage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	load, err := stageModules(k, stage, extra)
	if err != nil {
		return err
	}
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return fmt.Errorf("%v (install busybox-static)", err)
	}
	cfg, _ := os.ReadFile(k.config())

	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := &cpioWriter{w: f}
	for _, d := range []string{"bin", "sbin", "dev", "proc", "sys", "tmp", "newroot", "lib", "lib/modules"} {
		w.dir(d)
	}
	w.file("bin/busybox", 0o755, bb)
	w.file("init", 0o755, initScript)
	w.file("modules.load", 0o644, []byte(strings.Join(load, "\n")+"\n"))
	if cfg != nil {
		w.file("config-"+k.Release, 0o644, cfg)
	}
	// The staged modules tree, directories first.
	var paths []string
	root := filepath.Join(stage, "lib")
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != root {
			paths = append(paths, p)
		}
		return err
	})
	sort.Strings(paths)
	for _, p := range paths {
		rel, _ := filepath.Rel(stage, p)
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.IsDir() {
			w.dir(rel)
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		w.file(rel, 0o644, data)
	}
	w.trailer()
	if w.err != nil {
		f.Close()
		return w.err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// cpioWriter writes the "newc" format the kernel unpacks into its rootfs.
type cpioWriter struct {
	w   io.Writer
	ino uint32
	off int64
	err error
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.off += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.off % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) entry(name string, mode uint32, data []byte) {
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
	c.write(data)
	c.pad()
}

func (c *cpioWriter) dir(name string)                         { c.entry(name, 0o040755, nil) }
func (c *cpioWriter) file(name string, perm uint32, b []byte) { c.entry(name, 0o100000|perm, b) }
func (c *cpioWriter) trailer()                                { c.entry("TRAILER!!!", 0, nil) }
