package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseSources(t *testing.T) {
	etc := t.TempDir()
	os.MkdirAll(filepath.Join(etc, "sources.list.d"), 0o755)
	os.WriteFile(filepath.Join(etc, "sources.list.d", "debian.sources"), []byte(`Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://disabled.example/debian
Suites: trixie
Enabled: no
`), 0o644)
	os.WriteFile(filepath.Join(etc, "sources.list.d", "other.list"), []byte(
		"deb [arch=amd64 signed-by=/x.gpg] https://vendor.example/apt stable-vendor main\n"), 0o644)
	m, err := readMirrors(etc)
	if err != nil {
		t.Fatal(err)
	}
	if m.archive != "http://mirror.example/debian" || m.security != "http://mirror.example/debian-security" {
		t.Fatalf("mirrors %+v", m)
	}

	// One-line format only, no security entry: derived from the archive.
	etc2 := t.TempDir()
	os.WriteFile(filepath.Join(etc2, "sources.list"), []byte(
		"# deb http://old.example/debian buster main\ndeb [signed-by=/k.gpg] http://m2.example/debian/ bookworm main contrib\n"), 0o644)
	m, err = readMirrors(etc2)
	if err != nil || m.archive != "http://m2.example/debian" || m.security != "http://m2.example/debian-security" {
		t.Fatalf("one-line sources: %+v, %v", m, err)
	}
	if _, err := readMirrors(t.TempDir()); err == nil {
		t.Fatal("no sources: no error")
	}
}

func TestCompareDebVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"6.1.192-2", "6.1.192-1", 1},
		{"6.12.117-1", "6.12.43-1~bpo12+1", 1},
		{"7.3.4-1~bpo13+1", "7.3.4-1", -1},
		{"5.10.262-1", "5.10.262-1", 0},
		{"1:1.0", "2.0", 1},
		{"1.0a", "1.0", 1},
		{"1.0~rc1", "1.0", -1},
		{"6.18.15-1~bpo13+1", "6.18.9-1~bpo13+1", 1},
	} {
		if got := compareDebVersions(c.a, c.b); got != c.want {
			t.Errorf("compare(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := compareDebVersions(c.b, c.a); got != -c.want {
			t.Errorf("compare(%q, %q) = %d, want %d", c.b, c.a, got, -c.want)
		}
	}
}

func TestPickImage(t *testing.T) {
	names := []string{
		"linux-image-5.10.0-45-amd64", "linux-image-5.10.0-46-amd64", "linux-image-5.10.0-46-cloud-amd64",
		"linux-image-6.1.0-9-amd64", "linux-image-6.1.0-56-amd64",
		"linux-image-6.12.117+deb12-amd64", "linux-image-6.12.117+deb13-amd64", "linux-image-6.12.43+deb12-amd64",
		"linux-image-6.16.12+deb13-amd64", "linux-image-7.3.4+deb13-amd64", "linux-image-amd64",
	}
	versions := map[string]string{
		"linux-image-5.10.0-45-amd64": "5.10.250-1", "linux-image-5.10.0-46-amd64": "5.10.262-1",
		"linux-image-6.1.0-9-amd64": "6.1.27-1", "linux-image-6.1.0-56-amd64": "6.1.192-2",
		"linux-image-6.12.117+deb12-amd64": "6.12.117-1~deb12u1", "linux-image-6.12.117+deb13-amd64": "6.12.117-1",
		"linux-image-6.12.43+deb12-amd64": "6.12.43-1~bpo12+1",
		"linux-image-6.16.12+deb13-amd64": "6.16.12-1~bpo13+1", "linux-image-7.3.4+deb13-amd64": "7.3.4-1~bpo13+1",
	}
	for line, want := range map[string]string{
		"5.10":           "linux-image-5.10.0-46-amd64",
		"6.1":            "linux-image-6.1.0-56-amd64", // not 6.12, not 6.16
		"6.12":           "linux-image-6.12.117+deb13-amd64",
		"6.12.117+deb12": "linux-image-6.12.117+deb12-amd64",
		"7.3":            "linux-image-7.3.4+deb13-amd64",
	} {
		got, err := pickImage(line, names, versions)
		if err != nil || got != want {
			t.Errorf("pickImage(%q) = %q, %v; want %q", line, got, err, want)
		}
	}
	if _, err := pickImage("4.19", names, versions); err == nil {
		t.Error("4.19: no error")
	}
}

func TestModuleOrder(t *testing.T) {
	ix := &modIndex{path: map[string]string{}, deps: map[string][]string{}, builtin: map[string]bool{"virtio_pci": true}}
	ix.parseDep(`kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz
kernel/net/9p/9pnet.ko.xz:
kernel/fs/netfs/netfs.ko.xz:
kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/net/sched/sch_fq.ko.xz:
kernel/drivers/net/veth.ko:
`)
	paths, missing := ix.order([]string{"virtio_pci", "9pnet_virtio", "9p", "sch-fq", "veth", "cls_flower"})
	want := []string{
		"kernel/net/9p/9pnet.ko.xz", "kernel/drivers/virtio/virtio_ring.ko.xz", "kernel/net/9p/9pnet_virtio.ko.xz",
		"kernel/fs/netfs/netfs.ko.xz", "kernel/fs/9p/9p.ko.xz", "kernel/net/sched/sch_fq.ko.xz", "kernel/drivers/net/veth.ko",
	}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("order:\n got %q\nwant %q", paths, want)
	}
	if !reflect.DeepEqual(missing, []string{"cls_flower"}) {
		t.Errorf("missing %q", missing)
	}
}

// The initramfs writer's output must be what cpio itself reads back.
func TestCpioNewc(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	var buf bytes.Buffer
	w := &cpioWriter{w: &buf}
	w.dir("bin")
	w.file("bin/hello", 0o755, []byte("#!/bin/sh\necho hi\n"))
	w.file("odd", 0o644, []byte("x"))
	w.trailer()
	if w.err != nil {
		t.Fatal(w.err)
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-id", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "bin", "hello")); err != nil || string(b) != "#!/bin/sh\necho hi\n" {
		t.Fatalf("bin/hello: %q, %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "bin", "hello")); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("bin/hello mode: %v, %v", st.Mode(), err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "odd")); string(b) != "x" {
		t.Fatalf("odd: %q", b)
	}
}

func TestParserCountsAndFigures(t *testing.T) {
	out := `KS-PKG-BEGIN pkg/a
=== RUN   TestOne
--- PASS: TestOne (0.01s)
=== RUN   TestTwo
    two_test.go:9: kernel 5.10 < 6.6: tcx not supported
--- SKIP: TestTwo (0.00s)
=== RUN   TestThree
=== RUN   TestThree/sub
    three_test.go:12: FIGURE pace ingress 16M: 16.00 Mbit/s
--- FAIL: TestThree (1.00s)
    --- FAIL: TestThree/sub (1.00s)
FAIL
KS-PKG-END pkg/a 1
KS-PKG-BEGIN pkg/b
panic: boom
KS-PKG-END pkg/b 2
KS-PKG-BEGIN pkg/c
=== RUN   TestNeverEnds
`
	res := &kernelResult{k: &kernel{}}
	p := &parser{res: res}
	// The parser prints its per-package verdicts: keep test output clean.
	stdout := os.Stdout
	os.Stdout, _ = os.Open(os.DevNull)
	for _, l := range strings.Split(out, "\n") {
		p.line(l)
	}
	os.Stdout = stdout
	a, b, c := res.pkgs[0], res.pkgs[1], res.pkgs[2]
	if a.pass != 1 || a.fail != 2 || a.skip != 1 || a.rc != 1 || !a.done {
		t.Errorf("pkg/a: %+v", a)
	}
	if !reflect.DeepEqual(a.skipped, []string{"TestTwo: kernel 5.10 < 6.6: tcx not supported"}) {
		t.Errorf("skip reasons %q", a.skipped)
	}
	if b.fail != 0 || b.rc != 2 || c.done {
		t.Errorf("pkg/b %+v, pkg/c %+v", b, c)
	}
	pass, fail, skip := res.totals()
	// pkg/b died without a failing test and pkg/c never ended: one each.
	if pass != 1 || fail != 4 || skip != 1 {
		t.Errorf("totals %d/%d/%d, want 1/4/1", pass, fail, skip)
	}
	if !reflect.DeepEqual(res.figures, []string{"pace ingress 16M: 16.00 Mbit/s"}) {
		t.Errorf("figures %q", res.figures)
	}
}

func TestHiddenInGuest(t *testing.T) {
	got := hiddenInGuest([]string{"/tmp/ci/repo", "/tmp/ci/repo/.cache/kernels/jobs/x", "/work/main", "/run/user/0/x"})
	want := []string{"/tmp/ci/repo", "/run/user/0/x"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("hiddenInGuest = %q, want %q", got, want)
	}
}

func TestShellQuote(t *testing.T) {
	if got := shellQuote(`a'b c`); got != `'a'\''b c'` {
		t.Errorf("shellQuote = %s", got)
	}
}
