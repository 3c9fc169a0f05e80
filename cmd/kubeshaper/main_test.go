package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/tests/kfeature"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// cli runs the CLI in the node netns with a private bpffs pin dir.
type cli struct {
	t    *testing.T
	lab  *netlab.Lab
	node string
}

func newCLI(t *testing.T) (*cli, *netlab.Pod) {
	lab := netlab.New(t, "cl")
	pod := lab.AddPod("a")
	base := netlab.PinDir(t, "kscl")
	// The pins go to <base>/kubeshaper/netns-<inode>: a bpffs subdirectory
	// stands in for the mount.
	t.Setenv(datapath.PinDirEnv, base)
	return &cli{t: t, lab: lab, node: "/var/run/netns/" + lab.Node}, pod
}

func (c *cli) run(args ...string) (code int, stdout, stderr string) {
	c.t.Helper()
	var out, errb bytes.Buffer
	podnet.Do(c.node, func() error {
		code = run(args, &out, &errb)
		return nil
	})
	return code, out.String(), errb.String()
}

func TestBadInputExitsTwoAndChangesNothing(t *testing.T) {
	c, pod := newCLI(t)
	cases := []struct {
		args []string
		want string // in the one stderr line
	}{
		{[]string{"iface", "apply", pod.HostVeth, `bandwidth=100 lightyears egress`}, "lightyears"},
		{[]string{"iface", "apply", pod.HostVeth, `loss=uniform egress 250%`}, "250"},
		{[]string{"iface", "apply", pod.HostVeth, `speed=10mbit egress`}, `unknown rule "speed"`},
		{[]string{"iface", "apply", pod.HostVeth, `bandwidth`}, "not KEY=VALUE"},
		{[]string{"iface", "apply", pod.HostVeth, `loss=uniform egress 1%`, `loss=uniform ingress 1%`}, "given twice"},
		{[]string{"iface", "apply", "nosuchveth0", `loss=uniform egress 1%`}, `no interface "nosuchveth0"`},
		{[]string{"iface", "apply", pod.HostVeth, `bandwidth=10mbit ingress mode=pace`}, "sch_fq"},
		{[]string{"iface", "clear"}, "needs a host interface name"},
		{[]string{"iface", "clear", pod.HostVeth, "extra"}, "one interface"},
		{[]string{"iface", "apply", "--netns", pod.Netns, pod.HostVeth, `loss=uniform egress 1%`}, "go together"},
		{[]string{"iface", "apply", "--pod-side", "sideways", pod.HostVeth}, "want egress, ingress or both"},
		{[]string{"frobnicate"}, "usage"},
	}
	for _, tc := range cases {
		if tc.want == "sch_fq" && kfeature.HaveSchFQ() == nil {
			continue // this kernel has fq: pace mode is valid here (tests/guest)
		}
		code, _, stderr := c.run(tc.args...)
		if code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", tc.args, code, stderr)
		}
		if !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: stderr %q does not name %q", tc.args, stderr, tc.want)
		}
		if tc.args[0] != "frobnicate" && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%q: want one line, got %q", tc.args, stderr)
		}
	}
	if out := c.lab.In(c.lab.Node, "tc", "filter", "show", "dev", pod.HostVeth, "ingress"); strings.Contains(out, "kubeshaper") {
		t.Fatalf("bad input left a filter:\n%s", out)
	}
}

func TestApplyStatusClear(t *testing.T) {
	c, pod := newCLI(t)
	code, out, stderr := c.run("iface", "apply", pod.HostVeth, `bandwidth=100mbit egress`, `loss=uniform ingress 1%`)
	if code != 0 {
		t.Fatalf("apply: exit %d: %s", code, stderr)
	}
	if !strings.Contains(out, "100mbit") {
		t.Errorf("apply output %q does not echo the rule", out)
	}
	for _, hook := range []string{"ingress", "egress"} {
		if o := c.lab.In(c.lab.Node, "tc", "filter", "show", "dev", pod.HostVeth, hook); !strings.Contains(o, "kubeshaper_pod_") {
			t.Errorf("tc filter show dev %s %s has no kubeshaper filter:\n%s", pod.HostVeth, hook, o)
		}
	}
	c.lab.In(pod.Name, "ping", "-c", "3", "-i", "0.05", pod.HostIP.String())
	code, out, stderr = c.run("status", "--json")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, stderr)
	}
	var st []ifaceStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if len(st) != 1 || st[0].Interface != pod.HostVeth || len(st[0].Filters) != 2 || len(st[0].Directions) != 2 {
		t.Fatalf("status: %+v", st)
	}
	eg := st[0].Directions[0]
	if eg.Direction != "egress" || eg.RateBits != 100e6 || eg.Packets < 3 {
		t.Errorf("egress status %+v: want 100 Mbit/s and the 3 pings counted", eg)
	}
	if in := st[0].Directions[1]; in.LossRatio < 0.0099 || in.LossRatio > 0.0101 {
		t.Errorf("ingress loss ratio %v, want 0.01", in.LossRatio)
	}
	if code, _, stderr = c.run("iface", "clear", pod.HostVeth); code != 0 {
		t.Fatalf("clear: exit %d: %s", code, stderr)
	}
	if o := c.lab.In(c.lab.Node, "tc", "filter", "show", "dev", pod.HostVeth, "ingress"); strings.Contains(o, "kubeshaper") {
		t.Errorf("clear left a filter:\n%s", o)
	}
	if _, out, _ = c.run("status", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("status after clear: %s", out)
	}
}

// TestBPFFSFlagIsAValueNotTheEnvironment: --bpffs picks where the pins go
// without touching the process environment, and a directory that is not a
// bpffs is refused with a message saying how to mount one.
func TestBPFFSFlagIsAValueNotTheEnvironment(t *testing.T) {
	c, pod := newCLI(t)
	base := os.Getenv(datapath.PinDirEnv)
	t.Setenv(datapath.PinDirEnv, "")
	if code, _, errOut := c.run("--bpffs", base, "iface", "apply", pod.HostVeth, "loss=uniform egress 1%"); code != 0 {
		t.Fatalf("apply with --bpffs: exit %d: %s", code, errOut)
	}
	t.Cleanup(func() { c.run("--bpffs", base, "iface", "clear", pod.HostVeth) })
	if got := os.Getenv(datapath.PinDirEnv); got != "" {
		t.Fatalf("the CLI set $%s=%q", datapath.PinDirEnv, got)
	}
	if entries, err := os.ReadDir(base + "/kubeshaper"); err != nil || len(entries) == 0 {
		t.Fatalf("no pins under the --bpffs given (%v)", err)
	}
	code, _, errOut := c.run("--bpffs", t.TempDir(), "status")
	if code == 0 || !strings.Contains(errOut, "not a bpffs mount") || !strings.Contains(errOut, "mount -t bpf") {
		t.Fatalf("a non-bpffs --bpffs: exit %d, stderr %q", code, errOut)
	}
}
