// Package foreign loads "another tool's" TC programs (testdata/foreign.c: what eBPF
// CNIs put on a pod's veth) and attaches them the ways such tools do — a
// tcx link at the head or the tail, a cls_bpf filter at pref 1 — for
// kubeshaper's coexistence tests and `make bench-cni`. It never touches
// kubeshaper's own attachments.
package foreign

import (
	"bytes"
	_ "embed"
	"fmt"
	"net"
	"os/exec"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

//go:embed testdata/foreign.o
var object []byte

// Kinds of foreign program.
const (
	OK       = "foreign_ok"    // TC_ACT_OK: ends the hook
	Next     = "foreign_next"  // TC_ACT_UNSPEC: passes on
	Redirect = "foreign_redir" // bpf_redirect to Target's egress
	Peer     = "foreign_peer"  // bpf_redirect_peer into Target's peer
)

// Target is where the redirecting programs send packets: the ifindex (in
// the netns the program runs in) and, for Peer, the destination pod's
// eth0 MAC and the node end's MAC.
type Target struct {
	Ifindex int
	DstMAC  net.HardwareAddr
	SrcMAC  net.HardwareAddr
}

// Load loads one program of foreign.c.
func Load(kind string, tgt Target) (*ebpf.Program, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["redir_ifindex"].Set(uint32(tgt.Ifindex)); err != nil {
		return nil, err
	}
	if len(tgt.DstMAC) == 6 {
		var d, s [6]byte
		copy(d[:], tgt.DstMAC)
		copy(s[:], tgt.SrcMAC)
		if err := spec.Variables["dst_mac"].Set(d); err != nil {
			return nil, err
		}
		if err := spec.Variables["src_mac"].Set(s); err != nil {
			return nil, err
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", kind, err)
	}
	defer coll.Close()
	p := coll.DetachProgram(kind)
	if p == nil {
		return nil, fmt.Errorf("no program %s in foreign.o", kind)
	}
	return p, nil
}

// AttachTCX puts prog on the interface's tc ingress (ingress true) or
// egress tcx chain, at the head or the tail, in the calling thread's netns.
// Close the link to remove it.
func AttachTCX(ifindex int, ingress, head bool, prog *ebpf.Program) (link.Link, error) {
	at := ebpf.AttachTCXEgress
	if ingress {
		at = ebpf.AttachTCXIngress
	}
	anchor := link.Tail()
	if head {
		anchor = link.Head()
	}
	return link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: at, Anchor: anchor})
}

// AddClsBPF adds prog as a direct-action cls_bpf filter at pref 1 handle 1
// (Cilium's legacy slot) on dev's hook ("ingress" or "egress"), with tc,
// in netns (a name under /var/run/netns; "" for the caller's). The program
// is pinned at pin for tc to find it.
func AddClsBPF(netns, dev, hook string, prog *ebpf.Program, pin string) error {
	if err := prog.Pin(pin); err != nil {
		return err
	}
	// As the other tool would: a clsact unless there is one.
	if err := tc(netns, "tc", "qdisc", "add", "dev", dev, "clsact"); err != nil &&
		!strings.Contains(err.Error(), "exists") && !strings.Contains(err.Error(), "Exclusivity flag on") {
		return err
	}
	args := []string{"tc", "filter", "add", "dev", dev, hook, "pref", "1", "handle", "1", "bpf", "da", "pinned", pin}
	return tc(netns, args...)
}

// DelFilter deletes the filter at pref/handle on dev's hook (as a CNI that
// clears the legacy slots does), with tc.
func DelFilter(netns, dev, hook, pref, handle string) error {
	return tc(netns, "tc", "filter", "del", "dev", dev, hook, "pref", pref, "handle", handle, "bpf")
}

func tc(netns string, args ...string) error {
	if netns != "" {
		// nsenter, not `ip netns exec`: that remounts /sys and hides the
		// bpffs holding the pin.
		args = append([]string{"nsenter", "--net=/var/run/netns/" + netns}, args...)
	}
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}
