package shaper

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

func (f *fixture) applyPrograms(t *testing.T, ifc Interface, pol rules.Policy) [2]ProgramStatus {
	t.Helper()
	var st [2]ProgramStatus
	f.inNode(t, func() error { st = f.sh.ApplyPrograms(ifc, pol); return nil })
	return st
}

func (f *fixture) programFilters(t *testing.T, ifc Interface) []attach.Filter {
	t.Helper()
	var fl []attach.Filter
	f.inNode(t, func() (err error) { fl, err = attach.ListProgramFilters(ifc.Index); return err })
	return fl
}

// TestCustomProgramsRealTraffic: the drop_port example drops exactly its
// port's datagrams, counted under reason "program"; the dscp example marks
// what the pod sends; both sit behind kubeshaper's filter (priority 2) and
// go with the rule.
func TestCustomProgramsRealTraffic(t *testing.T) {
	f := setup(t)
	f.sh.ProgramDir = netlab.ProgramDir(t)
	ifc := f.iface(t, f.a)
	pol := parsePolicy(t, map[string]string{"kubeshaper.io/program": "drop_port egress PORT=7101 PROTO=17; dscp ingress DSCP=46"})
	f.apply(t, ifc, pol)
	for d, st := range f.applyPrograms(t, ifc, pol) {
		if st.Err != nil || st.Filter == "" {
			t.Fatalf("%s: %+v", rules.Direction(d), st)
		}
	}
	out := f.lab.In(f.lab.Node, "tc", "filter", "show", "dev", ifc.Name, "ingress")
	if !strings.Contains(out, "pref 2 bpf") || !strings.Contains(out, "kubeshaper_prog_drop_port_") {
		t.Fatalf("no custom filter at pref 2:\n%s", out)
	}
	const n = 2000
	if r := stream(t, f.a, f.b, 7101, n); r.Received != 0 {
		t.Errorf("%d datagrams to the dropped port arrived", r.Received)
	}
	if r := stream(t, f.a, f.b, 7102, n); r.Received != n {
		t.Errorf("%d of %d datagrams to another port arrived", r.Received, n)
	}
	if c := f.counters(t, ifc, rules.Egress); c.DropPackets[datapath.ReasonProgram] != n {
		t.Errorf("program drops %d, want %d", c.DropPackets[datapath.ReasonProgram], n)
	}
	// What the pod receives is marked EF (DSCP 46) by the ingress program.
	if tos := receiveTOS(t, f.b, f.a, 7103); tos>>2 != 46 {
		t.Errorf("pod received TOS %#x, want DSCP 46", tos)
	}
	// Applying again keeps the loaded programs (same file, same params).
	before := f.programFilters(t, ifc)
	f.applyPrograms(t, ifc, pol)
	after := f.programFilters(t, ifc)
	if len(before) != 2 || len(after) != 2 || before[0].ProgID != after[0].ProgID || before[1].ProgID != after[1].ProgID {
		t.Errorf("re-apply reloaded: %+v then %+v", before, after)
	}
	intact := func(want [2]string) (ok bool) {
		f.inNode(t, func() error { ok = f.sh.ProgramsIntact(ifc, want); return nil })
		return ok
	}
	if !intact([2]string{after[0].Name, after[1].Name}) || intact([2]string{after[0].Name, ""}) || intact([2]string{"", ""}) {
		t.Error("ProgramsIntact wrong")
	}
	// A parameter change reloads that direction only.
	pol2 := parsePolicy(t, map[string]string{"kubeshaper.io/program": "drop_port egress PORT=7102 PROTO=17; dscp ingress DSCP=46"})
	f.applyPrograms(t, ifc, pol2)
	if r := stream(t, f.a, f.b, 7101, 200); r.Received != 200 {
		t.Errorf("old port still dropped after the change: %d of 200", r.Received)
	}
	// Removing the annotation removes the programs; Clear leaves nothing.
	f.applyPrograms(t, ifc, rules.Policy{})
	if fl := f.programFilters(t, ifc); len(fl) != 0 {
		t.Errorf("program filters left: %+v", fl)
	}
	f.applyPrograms(t, ifc, pol)
	f.inNode(t, func() error { return f.sh.Clear(ifc) })
	if got := ourFilters(t, f, ifc.Name); len(got) != 0 {
		t.Fatalf("after clear: %s", strings.Join(got, "\n"))
	}
}

// TestCustomProgramFailureKeepsBuiltins: a program the verifier rejects
// gives its error (with the verifier's words) and no filter on its hook;
// the pod's built-in rules keep working, and a program on the other
// direction is unaffected.
func TestCustomProgramFailureKeepsBuiltins(t *testing.T) {
	f := setup(t)
	f.sh.ProgramDir = netlab.ProgramDir(t)
	ifc := f.iface(t, f.a)
	pol := parsePolicy(t, map[string]string{
		"kubeshaper.io/program": "bad_verifier egress; drop_port ingress PORT=7201",
		"kubeshaper.io/loss":    "uniform egress 100% port=7202",
	})
	f.apply(t, ifc, pol)
	st := f.applyPrograms(t, ifc, pol)
	var pe *datapath.ProgramError
	if !errors.As(st[rules.Egress].Err, &pe) || !pe.Verifier || !strings.Contains(pe.Error(), "invalid access to packet") {
		t.Fatalf("egress: %v, want the verifier's rejection", st[rules.Egress].Err)
	}
	if st[rules.Ingress].Err != nil {
		t.Fatalf("ingress: %v", st[rules.Ingress].Err)
	}
	fl := f.programFilters(t, ifc)
	if len(fl) != 1 || fl[0].Hook != attach.HookEgress {
		t.Fatalf("program filters %+v, want the ingress program only", fl)
	}
	if r := stream(t, f.a, f.b, 7202, 500); r.Received != 0 {
		t.Errorf("built-in loss stopped working: %d of 500 arrived", r.Received)
	}
	if r := stream(t, f.b, f.a, 7201, 500); r.Received != 0 {
		t.Errorf("the other direction's program stopped working: %d of 500 arrived", r.Received)
	}
	if r := stream(t, f.a, f.b, 7203, 500); r.Received != 500 {
		t.Errorf("unrelated traffic: %d of 500 arrived", r.Received)
	}
	// No program directory: a clear error, nothing loaded.
	f.sh.ProgramDir = ""
	st = f.applyPrograms(t, ifc, pol)
	if !errors.Is(st[rules.Ingress].Err, datapath.ErrNoProgramDir) {
		t.Errorf("without --program-dir: %v", st[rules.Ingress].Err)
	}
}

// receiveTOS sends one datagram and returns the TOS byte it arrived with.
func receiveTOS(t *testing.T, from, to *netlab.Pod, port int) byte {
	t.Helper()
	var conn *net.UDPConn
	if err := podnet.Do(to.Netns, func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: to.IP, Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc, _ := conn.SyscallConn()
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTOS, 1) })
	var out *net.UDPConn
	if err := podnet.Do(from.Netns, func() (err error) {
		out, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: to.IP, Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	out.Write([]byte("tos?"))
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf, oob := make([]byte, 64), make([]byte, 64)
	_, oobn, _, _, err := conn.ReadMsgUDP(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TOS && len(m.Data) > 0 {
			return m.Data[0]
		}
	}
	t.Fatal("no IP_TOS control message")
	return 0
}
