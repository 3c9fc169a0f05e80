package e2ecni

import (
	"fmt"
	"os/exec"
	"runtime"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
)

// hooks describes, for the record, every program on the interface's two
// tc hooks in the node's netns: the tcx chain in run order (which this
// machine's bpftool v7.1 cannot list per device) and the classic filters.
// It names the CNI's programs a bypassed cell ran into.
func hooks(nsName string, ifindex int, iface string) string {
	var b strings.Builder
	func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			fmt.Fprintf(&b, "netns: %v\n", err)
			return
		}
		defer orig.Close()
		ns, err := netns.GetFromName(nsName)
		if err != nil {
			fmt.Fprintf(&b, "netns %s: %v\n", nsName, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			fmt.Fprintf(&b, "setns %s: %v\n", nsName, err)
			return
		}
		defer netns.Set(orig)
		for _, h := range []struct {
			name string
			at   ebpf.AttachType
		}{{"tcx ingress", ebpf.AttachTCXIngress}, {"tcx egress", ebpf.AttachTCXEgress}} {
			r, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: h.at})
			if err != nil {
				fmt.Fprintf(&b, "%s: %v\n", h.name, err)
				continue
			}
			var progs []string
			for _, p := range r.Programs {
				name := "?"
				if prog, err := ebpf.NewProgramFromID(p.ID); err == nil {
					if info, err := prog.Info(); err == nil {
						name = info.Name
					}
					prog.Close()
				}
				lid, _ := p.LinkID()
				progs = append(progs, fmt.Sprintf("%s (prog %d, link %d)", name, p.ID, lid))
			}
			fmt.Fprintf(&b, "%s: [%s]\n", h.name, strings.Join(progs, ", "))
		}
	}()
	for _, hook := range []string{"ingress", "egress"} {
		out, _ := exec.Command("ip", "netns", "exec", nsName, "tc", "filter", "show", "dev", iface, hook).CombinedOutput()
		var names []string
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 0 && strings.Contains(l, " bpf ") && strings.Contains(l, "handle") {
				names = append(names, strings.Join(f, " "))
			}
		}
		fmt.Fprintf(&b, "tc %s: [%s]\n", hook, strings.Join(names, "; "))
	}
	return strings.TrimSpace(b.String())
}
