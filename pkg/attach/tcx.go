package attach

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// tcx (kernels ≥ 6.6) is a chain of BPF links run before any classic
// clsact filter: only TCX_NEXT (TC_ACT_UNSPEC, what our programs return
// for what they pass) goes on to the next program and then to the filters.
// Another tool's tcx program returning TC_ACT_OK or a redirect therefore
// hides every cls_bpf filter, ours included. kubeshaper moves to the head
// of the chain where that can happen, as a link pinned in the bpffs so
// that it outlives the process that attached it (a restarted agent adopts
// it: Link.Update swaps the program, the position stays).

// attachType maps a clsact hook to its tcx attach type.
func (h Hook) attachType() ebpf.AttachType {
	if h == HookEgress {
		return ebpf.AttachTCXEgress
	}
	return ebpf.AttachTCXIngress
}

var (
	tcxOnce sync.Once
	tcxOK   bool
)

// TCXSupported reports whether the kernel has tcx: a query of the
// loopback's tcx ingress chain succeeds (EINVAL before 6.6).
func TCXSupported() bool {
	tcxOnce.Do(func() {
		_, err := link.QueryPrograms(link.QueryOptions{Target: 1, Attach: ebpf.AttachTCXIngress})
		tcxOK = err == nil
	})
	return tcxOK
}

// Entry is one program on a hook, in the order the kernel runs them: tcx
// links first, then cls_bpf filters of chain 0.
type Entry struct {
	TCX    bool   // a tcx link; else a classic tc filter
	ProgID uint32 // 0 for a non-BPF tc filter
	LinkID uint32 // tcx only
	Name   string // the program's name (tcx), the filter's name (tc)
	Kind   string // tc filters: "bpf", "u32", …
	Pref   uint16 // tc filters
	Handle uint32 // tc filters
	Ours   bool   // kubeshaper's own (a pinned link of ours, our filter slot)
}

func (e Entry) String() string {
	if e.TCX {
		return fmt.Sprintf("tcx program %q (id %d, link %d)", e.Name, e.ProgID, e.LinkID)
	}
	if e.ProgID != 0 {
		return fmt.Sprintf("cls_bpf filter %q (prog id %d, pref %d handle %#x)", e.Name, e.ProgID, e.Pref, e.Handle)
	}
	return fmt.Sprintf("%s filter (pref %d handle %#x)", e.Kind, e.Pref, e.Handle)
}

// Chain lists what runs on the hook, first first. ourLinks are the tcx
// link IDs that are kubeshaper's (read from its pins): a tcx link carries
// no owner of its own. Filters of our slots carrying our name are Ours.
func Chain(ifindex int, hook Hook, ourLinks ...uint32) ([]Entry, error) {
	var out []Entry
	if TCXSupported() {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: hook.attachType()})
		if err != nil && !errors.Is(err, unix.ENODEV) {
			return nil, failHook("query tcx", ifindex, hook, err)
		}
		if res != nil {
			for _, p := range res.Programs {
				lid, _ := p.LinkID()
				e := Entry{TCX: true, ProgID: uint32(p.ID), LinkID: uint32(lid), Name: progName(p.ID)}
				for _, o := range ourLinks {
					e.Ours = e.Ours || (o != 0 && o == e.LinkID)
				}
				out = append(out, e)
			}
		}
	}
	conn, err := dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	filters, err := dumpFilters(conn, ifindex, hook)
	if err != nil {
		if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return out, nil
		}
		return nil, failHook("list filters", ifindex, hook, err)
	}
	for i := range filters {
		f := &filters[i]
		if f.Chain != nil && *f.Chain != 0 {
			continue
		}
		e := Entry{Kind: f.Kind, Pref: priority(f), Handle: f.Handle}
		if f.BPF != nil {
			e.ProgID = deref(f.BPF.ID)
			if f.BPF.Name != nil {
				e.Name = *f.BPF.Name
			}
		}
		e.Ours = hasOurName(f) && (inSlot(f, FilterPriority) || inSlot(f, ProgramPriority))
		out = append(out, e)
	}
	return out, nil
}

func progName(id ebpf.ProgramID) string {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return ""
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return ""
	}
	return info.Name
}

// TCXLink is one of kubeshaper's pinned tcx links as the kernel reports it.
type TCXLink struct {
	LinkID  uint32
	ProgID  uint32
	Ifindex int
	Hook    Hook
}

// PinnedTCX reads the tcx link pinned at pin: ok false when there is none,
// or when the link is defunct (its interface was deleted; the pin is then
// removed, it can never attach again).
func PinnedTCX(pin string) (l TCXLink, ok bool, err error) {
	lk, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return l, false, nil
	}
	if err != nil {
		return l, false, fmt.Errorf("attach: load pinned tcx link %s: %w", pin, err)
	}
	defer lk.Close()
	info, err := lk.Info()
	if err != nil {
		return l, false, fmt.Errorf("attach: tcx link %s: %w", pin, err)
	}
	tcx := info.TCX()
	if tcx == nil || tcx.Ifindex == 0 {
		// Defunct: the device went away (a pod's veth with the pod).
		_ = lk.Unpin()
		return l, false, nil
	}
	l = TCXLink{LinkID: uint32(info.ID), ProgID: uint32(info.Program), Ifindex: int(tcx.Ifindex), Hook: HookIngress}
	if ebpf.AttachType(tcx.AttachType) == ebpf.AttachTCXEgress {
		l.Hook = HookEgress
	}
	return l, true, nil
}

// AttachTCXFirst puts prog at the front of the hook's tcx chain — after
// the programs named in yieldTo that lead the chain (the admin's choice
// of programs that must stay first), before everything else — as a link
// pinned at pin. A link of ours already pinned there is kept when it is
// at that place (its program is swapped to prog when it differs: an
// adopted link of a previous agent); otherwise a new link is attached at
// the place first and the old one released after, so that the hook never
// runs without us (for a moment both run: a packet may be counted twice).
// Nothing of another tool is moved or removed. Returns the link ID and
// whether the position had to be (re)taken.
func AttachTCXFirst(ifindex int, hook Hook, prog *ebpf.Program, pin string, yieldTo map[string]bool) (linkID uint32, moved bool, err error) {
	const op = "attach tcx"
	if !TCXSupported() {
		return 0, false, failHook(op, ifindex, hook, errors.New("the kernel has no tcx (needs 6.6 or later)"))
	}
	cur, have, err := PinnedTCX(pin)
	if err != nil {
		return 0, false, err
	}
	if have && (cur.Ifindex != ifindex || cur.Hook != hook) {
		return 0, false, failHook(op, ifindex, hook, fmt.Errorf("pin %s holds a link of ifindex %d %s", pin, cur.Ifindex, cur.Hook))
	}
	chain, err := Chain(ifindex, hook, cur.LinkID)
	if err != nil {
		return 0, false, err
	}
	lead := 0 // programs to stay in front of us
	var after ebpf.ProgramID
	for _, e := range chain {
		if !e.TCX || e.Ours || !yieldTo[e.Name] {
			break
		}
		lead++
		after = ebpf.ProgramID(e.ProgID)
	}
	info, err := prog.Info()
	if err != nil {
		return 0, false, failHook(op, ifindex, hook, err)
	}
	progID, _ := info.ID()
	if have && lead < len(chain) && chain[lead].TCX && chain[lead].Ours {
		if uint32(progID) != cur.ProgID {
			if err := updatePinned(pin, prog); err != nil {
				return 0, false, failHook(op, ifindex, hook, err)
			}
		}
		return cur.LinkID, false, nil
	}
	anchor := link.Head()
	if lead > 0 {
		anchor = link.AfterProgramByID(after)
	}
	if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
		return 0, false, failHook(op, ifindex, hook, err)
	}
	// A program appears at most once in a tcx chain (EEXIST), so ours
	// cannot be attached at the head beside its old place: the old link
	// is released first. The hook runs without us for the two syscalls
	// in between (microseconds); never two of ours, never a foreign one
	// displaced.
	if have {
		if err := unpin(pin); err != nil {
			return 0, false, failHook(op, ifindex, hook, err)
		}
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: hook.attachType(), Anchor: anchor})
	if err != nil {
		return 0, false, failHook(op, ifindex, hook, err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return 0, false, failHook(op, ifindex, hook, fmt.Errorf("pin %s: %w", pin, err))
	}
	li, err := l.Info()
	if err != nil {
		return 0, true, failHook(op, ifindex, hook, err)
	}
	return uint32(li.ID), true, nil
}

func updatePinned(pin string, prog *ebpf.Program) error {
	lk, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return err
	}
	defer lk.Close()
	return lk.Update(prog)
}

func unpin(pin string) error {
	lk, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		// Not a link we can load (a stale file): remove the name only.
		if rerr := os.Remove(pin); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return errors.Join(err, rerr)
		}
		return nil
	}
	defer lk.Close()
	return lk.Unpin()
}

// DetachTCX releases our tcx link pinned at pin: once unpinned and with
// no handle left, the kernel detaches it. No pin is not an error.
func DetachTCX(pin string) error {
	if err := unpin(pin); err != nil {
		return fmt.Errorf("attach: detach tcx link %s: %w", pin, err)
	}
	return nil
}

// TCXRevision is the hook's tcx chain revision, bumped by the kernel on
// every attach and detach: a cheap (one syscall) way to notice that the
// chain changed, since tcx changes send no netlink event. 0 without tcx
// or interface.
func TCXRevision(ifindex int, hook Hook) uint64 {
	if !TCXSupported() {
		return 0
	}
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: hook.attachType()})
	if err != nil || res == nil {
		return 0
	}
	return res.Revision
}

// AttachTCXAfter puts prog right behind the tcx link ours — the place of
// a custom program behind kubeshaper's own, so that it runs wherever ours
// runs, before other tools' programs — as a link pinned at pin. A link
// already pinned there and right behind ours is kept (its program swapped
// when it differs); one elsewhere in the chain is released and attached
// again behind ours (a program is in a chain at most once). Returns the
// link ID.
func AttachTCXAfter(ifindex int, hook Hook, prog *ebpf.Program, pin string, ours uint32) (uint32, error) {
	const op = "attach tcx behind kubeshaper's link"
	cur, have, err := PinnedTCX(pin)
	if err != nil {
		return 0, err
	}
	if have && (cur.Ifindex != ifindex || cur.Hook != hook) {
		return 0, failHook(op, ifindex, hook, fmt.Errorf("pin %s holds a link of ifindex %d %s", pin, cur.Ifindex, cur.Hook))
	}
	if have && Behind(ifindex, hook, ours, cur.LinkID) {
		info, err := prog.Info()
		if err != nil {
			return 0, failHook(op, ifindex, hook, err)
		}
		if id, _ := info.ID(); uint32(id) != cur.ProgID {
			if err := updatePinned(pin, prog); err != nil {
				return 0, failHook(op, ifindex, hook, err)
			}
		}
		return cur.LinkID, nil
	}
	if have {
		if err := unpin(pin); err != nil {
			return 0, failHook(op, ifindex, hook, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
		return 0, failHook(op, ifindex, hook, err)
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: hook.attachType(), Anchor: link.AfterLinkByID(link.ID(ours))})
	if err != nil {
		return 0, failHook(op, ifindex, hook, err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return 0, failHook(op, ifindex, hook, fmt.Errorf("pin %s: %w", pin, err))
	}
	li, err := l.Info()
	if err != nil {
		return 0, failHook(op, ifindex, hook, err)
	}
	return uint32(li.ID), nil
}

// Behind reports whether the tcx link next runs right after the tcx link
// first on the hook.
func Behind(ifindex int, hook Hook, first, next uint32) bool {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: hook.attachType()})
	if err != nil || res == nil {
		return false
	}
	for i, p := range res.Programs {
		if lid, _ := p.LinkID(); uint32(lid) == first {
			if i+1 >= len(res.Programs) {
				return false
			}
			lid, _ := res.Programs[i+1].LinkID()
			return uint32(lid) == next
		}
	}
	return false
}
