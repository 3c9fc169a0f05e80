package reliability

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	tc "github.com/florianl/go-tc"
	"github.com/florianl/go-tc/core"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// TestKernelFaults: each fault must give a clear error, a retry where
// retrying can help, and no leak.
func TestKernelFaults(t *testing.T) {
	w := agentenv.New(t, "rk")
	t.Run("bpffs not mounted", func(t *testing.T) { bpffsMissing(t, w) })
	t.Run("another tool's clsact and filters survive", func(t *testing.T) { foreignFilters(t, w) })
	t.Run("veth deleted between resolve and attach", func(t *testing.T) { vethRace(t, w) })
	t.Run("map full", func(t *testing.T) { mapFull(t, w) })
}

// bpffsMissing: pointed at a directory that is not on a bpffs, or with no
// bpffs mounted at all (a private mount and PID namespace where
// /sys/fs/bpf is unmounted, so that neither it nor an ancestor's is
// visible), the agent exits at once with a message saying what to do.
func bpffsMissing(t *testing.T, w *agentenv.World) {
	notBPF := t.TempDir()
	cases := []struct {
		name string
		o    agentenv.Options
	}{
		{"--bpffs on a tmpfs/ext4 directory", agentenv.Options{BPFFS: notBPF + "/pins", NoWait: true}},
		{"no bpffs mounted anywhere", agentenv.Options{BPFFS: "-", NoWait: true,
			Wrap: []string{"unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc", "sh", "-c", `umount -l /sys/fs/bpf && exec "$@"`, "sh"}}},
	}
	for _, c := range cases {
		start := time.Now()
		ag := w.StartAgent(c.o)
		exited, err := ag.Wait(bound(5 * time.Second))
		if !exited {
			t.Fatalf("%s: the agent still runs after %v", c.name, time.Since(start))
		}
		lines := strings.Split(strings.TrimSpace(ag.Log()), "\n")
		last := lines[len(lines)-1]
		t.Logf("%s: exit %v after %v: %s", c.name, err, time.Since(start).Round(time.Millisecond), last)
		if err == nil || !strings.Contains(last, "bpffs") || !strings.Contains(last, "mount") {
			t.Errorf("%s: want a failed exit whose last line names the bpffs and how to mount it, got %v: %s", c.name, err, last)
		}
	}
	if _, err := os.Stat(notBPF + "/pins"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the agent created %s/pins on a non-bpffs: %v", notBPF, err)
	}
}

// foreignFilters: another tool's clsact qdisc and filters on a pod's veth
// (on both hooks, before kubeshaper came) stay untouched through apply,
// rule changes, the pod's deletion and the agent's cleanup. A foreign
// filter in kubeshaper's own slot makes the apply fail with a clear
// ApplyFailed Event and no partial state; the agent retries, and
// succeeds once the slot is free.
func foreignFilters(t *testing.T, w *agentenv.World) {
	a, b := w.AddPod("fa"), w.AddPod("fb")
	aIdx, bIdx := w.Ifindex(a), w.Ifindex(b)
	for _, h := range []string{"ingress", "egress"} {
		if err := addForeignFilter(w, aIdx, h, 5, 1); err != nil {
			t.Fatal(err)
		}
		if err := addForeignFilter(w, aIdx, h, 0x7000, 7); err != nil {
			t.Fatal(err)
		}
	}
	if err := addForeignFilter(w, bIdx, "ingress", attach.FilterPriority, attach.FilterHandle); err != nil {
		t.Fatal(err)
	}
	foreignA, foreignB := foreignOf(t, w, aIdx), foreignOf(t, w, bIdx)
	same := func(when string) {
		t.Helper()
		if got := foreignOf(t, w, aIdx); !sameFilters(got, foreignA) {
			t.Fatalf("%s: the other tool's filters on fa changed: %+v, were %+v", when, got, foreignA)
		}
		if got := foreignOf(t, w, bIdx); !sameFilters(got, foreignB) {
			t.Fatalf("%s: the other tool's filter on fb changed: %+v, was %+v", when, got, foreignB)
		}
	}

	ag := w.StartAgent(agentenv.Options{CleanupOnExit: true})
	t.Cleanup(ag.Kill) // a failed subtest must not leave its agent to the next
	w.Pod(a, "fa", nil, map[string]string{"kubeshaper.io/bandwidth": "10mbit egress"})
	w.Pod(b, "fb", nil, map[string]string{"kubeshaper.io/bandwidth": "10mbit egress"})
	w.WaitRate(a, rules.Egress, 10e6)
	w.Eventually(10*time.Second, "kubeshaper's two filters on fa next to the other tool's", func() (bool, string) {
		return w.Filters(a) == 2, ""
	})
	same("after apply")
	w.Annotate("pod", "fa", map[string]any{"kubeshaper.io/bandwidth": "20mbit ingress"})
	w.WaitRate(a, rules.Ingress, 20e6)
	same("after a rule change")

	// fb: refused, clearly, with nothing half-applied, and retried.
	var msg string
	w.Eventually(15*time.Second, "ApplyFailed event on fb", func() (bool, string) {
		ev := w.Events("fb", "ApplyFailed")
		if len(ev) > 0 {
			msg = ev[0].Message
		}
		return len(ev) > 0, ""
	})
	if !strings.Contains(msg, "another tool") {
		t.Errorf("fb's ApplyFailed event does not say another tool holds the slot: %s", msg)
	}
	time.Sleep(2 * time.Second)
	for _, d := range rules.Directions {
		if _, ok := w.RuleAt(bIdx, d); ok {
			t.Errorf("fb has a %s map entry although its apply failed (half-applied)", d)
		}
	}
	if n := w.Filters(b); n != 0 {
		t.Errorf("fb has %d kubeshaper filters although its apply failed", n)
	}
	retries := strings.Count(ag.Log(), "pod=shaped/fb")
	same("while fb is refused")
	if err := delForeignFilter(w, bIdx, "ingress", attach.FilterPriority, attach.FilterHandle); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	w.WaitRate(b, rules.Egress, 10e6)
	t.Logf("foreign filter in kubeshaper's slot: ApplyFailed %q, no entry, no filter, %d log lines about fb while refused; applied %v after the slot was freed",
		msg, retries, time.Since(freed).Round(time.Millisecond))
	foreignB = nil

	if err := w.CS.CoreV1().Pods(w.NS).Delete(context.Background(), "fa", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	w.Eventually(10*time.Second, "fa's kubeshaper filters removed", func() (bool, string) {
		return w.Filters(a) == 0, ""
	})
	same("after the pod's deletion")
	ag.Stop(t) // --cleanup-on-exit=true
	same("after the agent's cleanup")
	if n := w.Filters(b); n != 0 {
		t.Errorf("fb keeps %d kubeshaper filters after cleanup", n)
	}
	t.Logf("another tool's clsact + 4 filters on fa: untouched through apply, change, deletion and cleanup")
	for _, h := range []string{"ingress", "egress"} {
		delForeignFilter(w, aIdx, h, 5, 1)
		delForeignFilter(w, aIdx, h, 0x7000, 7)
	}
	w.DeletePod("fb")
}

// vethRace deletes pods' veths while the agent resolves and attaches them
// (sweeping the delay after the Pod object appears), then re-plumbs each
// with a new veth as a CNI would: every pod must end on its new veth
// (rule and both filters), nothing may stay on the old ifindex, and after
// the pods are gone nothing at all.
func vethRace(t *testing.T, w *agentenv.World) {
	ag := w.StartAgent(agentenv.Options{CleanupOnExit: true})
	t.Cleanup(ag.Kill)
	const n = 40
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		old  []int
		pods []*netlab.Pod
	)
	sem := make(chan struct{}, 5)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := func() error {
				name := fmt.Sprintf("v%d", i)
				p, err := w.TryAddPod(name)
				if err != nil {
					return err
				}
				idx, err := w.TryIfindex(p)
				if err != nil {
					return err
				}
				ann := map[string]string{"kubeshaper.io/bandwidth": fmt.Sprintf("%dmbit egress", 10+i)}
				if _, err := w.Env.CreatePodWithIPs(context.Background(), w.NS, name, agentenv.NodeName, []string{p.IP.String()}, ann, nil); err != nil {
					return err
				}
				time.Sleep(time.Duration(i%20) * 2 * time.Millisecond) // 0–38 ms
				if err := w.DeleteVeth(p); err != nil {
					return err
				}
				time.Sleep(200 * time.Millisecond)
				if err := w.ReplaceVeth(p); err != nil {
					return err
				}
				mu.Lock()
				old, pods = append(old, idx), append(pods, p)
				mu.Unlock()
				return nil
			}()
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i, p := range pods {
		w.Eventually(bound(10*time.Second), p.Name+" on its new veth", func() (bool, string) {
			c, ok := w.Rule(p, rules.Egress)
			return ok && c.RateBits() != 0 && w.Filters(p) == 2, c.String()
		})
		for _, d := range rules.Directions {
			if _, ok := w.RuleAt(old[i], d); ok {
				t.Errorf("%s: an entry for its deleted veth (ifindex %d) %s is left", p.Name, old[i], d)
			}
		}
	}
	converged := time.Since(start)
	failed, failedEvents := ag.CountLog("reconcile failed"), 0
	for i := range n {
		failedEvents += len(w.Events(fmt.Sprintf("v%d", i), "ApplyFailed"))
	}
	for i := range n {
		w.DeletePod(fmt.Sprintf("v%d", i))
	}
	for _, p := range pods {
		w.RemovePod(p)
	}
	left := ""
	if _, err := agentenv.Poll(15*time.Second, 100*time.Millisecond, func() (bool, string) {
		pinned, err := w.PinnedObjects()
		if err != nil {
			return false, err.Error()
		}
		left = agentenv.FormatCounts(pinned)
		return agentenv.TotalEntries(pinned) == 0 && len(w.AllOurFilters()) == 0, left
	}); err != nil {
		t.Errorf("leftovers after the racing pods were deleted: %v", err)
	}
	t.Logf("veth race: %d pods whose veth was deleted 0–38 ms after the Pod object appeared and re-plumbed 200 ms later: %d reconciles failed and were retried, %d ApplyFailed events; all on their new veth within %v, 0 entries on old ifindexes; after deletion %s",
		n, failed, failedEvents, converged.Round(time.Millisecond), left)
	if failed == 0 {
		t.Logf("(the race window was never hit this time)")
	}
	ag.Stop(t)
}

// mapFull fills the slot table with interfaces that do not
// exist, up to its size, under a running agent whose leftover
// collection is far away (--resync 1h): a new pod's apply must fail with an
// ApplyFailed Event saying the map is full, leave no entry and no filter,
// not disturb the pods already shaped, and succeed on a retry once room is
// made.
func mapFull(t *testing.T, w *agentenv.World) {
	a, b := w.AddPod("ma"), w.AddPod("mb")
	w.Pod(a, "ma", nil, map[string]string{"kubeshaper.io/bandwidth": "10mbit egress"})
	ag := w.StartAgent(agentenv.Options{CleanupOnExit: true, Resync: time.Hour})
	t.Cleanup(ag.Kill)
	w.WaitRate(a, rules.Egress, 10e6)

	maps, err := w.Maps()
	if err != nil || !maps.Present() {
		t.Fatalf("opening the agent's maps: %v", err)
	}
	defer maps.Close()
	dp := maps.Datapath()
	filled := 0
	var dummies []datapath.Key
	for i := 0; ; i++ {
		k := datapath.KeyOf(0x7f000000+i, rules.Egress)
		err := dp.Set(k, datapath.Config{})
		if errors.Is(err, datapath.ErrFull) {
			break
		}
		if err != nil {
			t.Fatalf("filling the maps after %d interfaces: %v", filled, err)
		}
		dummies = append(dummies, k)
		filled++
	}
	t.Cleanup(func() {
		for _, k := range dummies {
			dp.Delete(k)
		}
	})
	w.Pod(b, "mb", nil, map[string]string{"kubeshaper.io/bandwidth": "20mbit egress"})
	bIdx := w.Ifindex(b)
	var msg string
	w.Eventually(15*time.Second, "ApplyFailed event on mb", func() (bool, string) {
		ev := w.Events("mb", "ApplyFailed")
		if len(ev) > 0 {
			msg = ev[0].Message
		}
		return len(ev) > 0, ""
	})
	if !strings.Contains(msg, "full") {
		t.Errorf("mb's ApplyFailed event does not say a map is full: %s", msg)
	}
	time.Sleep(2 * time.Second) // a few retries
	retries := ag.CountLog("reconcile failed")
	for _, d := range rules.Directions {
		if _, ok := w.RuleAt(bIdx, d); ok {
			t.Errorf("mb has a %s rule although its apply failed", d)
		}
	}
	if n := w.Filters(b); n != 0 {
		t.Errorf("mb has %d kubeshaper filters although its apply failed", n)
	}
	if c, ok := w.Rule(a, rules.Egress); !ok || c.RateBits() != 10e6 || w.Filters(a) != 2 {
		t.Errorf("ma lost its rule while the map was full: %s", c.String())
	}
	// Room: the operator (or --resync's leftover collection) frees it.
	freed := time.Now()
	for _, k := range dummies[:len(dummies)/2] {
		dp.Delete(k)
	}
	w.Eventually(bound(10*time.Second), "mb applied once there is room", func() (bool, string) {
		c, ok := w.Rule(b, rules.Egress)
		return ok && c.RateBits() == 20e6 && w.Filters(b) == 2, c.String()
	})
	t.Logf("map full: %d dummy keys filled %s; mb: ApplyFailed %q, %d failed reconciles retried, no entry, no filter, ma untouched; applied %v after room was made",
		filled, "the slot table", msg, retries, time.Since(freed).Round(time.Millisecond))
	for _, k := range dummies {
		dp.Delete(k)
	}
	ag.Stop(t)
	w.DeletePod("ma")
	w.DeletePod("mb")
}

// The other tool's filters: a one-instruction BPF program ("pass on") named
// "othertool", attached with go-tc in the node netns.
func addForeignFilter(w *agentenv.World, ifindex int, hook string, prio uint16, handle uint32) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "othertool", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}, // TC_ACT_UNSPEC
	})
	if err != nil {
		return err
	}
	defer prog.Close()
	return podnet.Do(w.NodeNetns(), func() error {
		if err := attach.EnsureClsact(ifindex); err != nil {
			return err
		}
		conn, err := tc.Open(&tc.Config{})
		if err != nil {
			return err
		}
		defer conn.Close()
		fd, name, flags := uint32(prog.FD()), "othertool", uint32(tc.BpfActDirect)
		return conn.Filter().Add(&tc.Object{
			Msg:       tc.Msg{Family: unix.AF_UNSPEC, Ifindex: uint32(ifindex), Handle: handle, Parent: hookParent(hook), Info: uint32(prio)<<16 | uint32(htons(unix.ETH_P_ALL))},
			Attribute: tc.Attribute{Kind: "bpf", BPF: &tc.Bpf{FD: &fd, Name: &name, Flags: &flags}},
		})
	})
}

func delForeignFilter(w *agentenv.World, ifindex int, hook string, prio uint16, handle uint32) error {
	return podnet.Do(w.NodeNetns(), func() error {
		conn, err := tc.Open(&tc.Config{})
		if err != nil {
			return err
		}
		defer conn.Close()
		return conn.Filter().Delete(&tc.Object{
			Msg:       tc.Msg{Family: unix.AF_UNSPEC, Ifindex: uint32(ifindex), Handle: handle, Parent: hookParent(hook), Info: uint32(prio)<<16 | uint32(htons(unix.ETH_P_ALL))},
			Attribute: tc.Attribute{Kind: "bpf"},
		})
	})
}

func hookParent(hook string) uint32 {
	if hook == "egress" {
		return core.BuildHandle(tc.HandleRoot, tc.HandleMinEgress)
	}
	return core.BuildHandle(tc.HandleRoot, tc.HandleMinIngress)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// foreignOf lists the filters on an interface that are not kubeshaper's.
func foreignOf(t *testing.T, w *agentenv.World, ifindex int) []hookFilter {
	t.Helper()
	fs, err := allFilters(w, ifindex)
	if err != nil {
		t.Fatal(err)
	}
	var out []hookFilter
	for _, f := range fs {
		if !strings.HasPrefix(f.Name, "kubeshaper") {
			out = append(out, f)
		}
	}
	return out
}

func sameFilters(a, b []hookFilter) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
