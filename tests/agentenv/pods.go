package agentenv

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// AddPod's pods are netlab pods made with netlink instead of a dozen `ip`
// commands each (a few ms instead of ~100 ms under load), so that tests can
// have hundreds of pods, or churn through thousands. Each World takes a
// 10.X.0.0/16 no other World on the machine holds (an flock'ed claim: the
// agent finds a pod's netns by its IP among *all* netns of the machine,
// and tests of other packages run at the same time), and gives each pod a
// /30: the host veth .1, the pod's eth0 .2.

// ipBlock is a claimed 10.X.0.0/16.
type ipBlock struct {
	second byte
	lock   *os.File
}

const claimDir = "/run/kubeshaper-tests"

// claimBlock takes a free second octet in [64, 191] (netlab uses 10.213).
func claimBlock() (*ipBlock, error) {
	if err := os.MkdirAll(claimDir, 0o755); err != nil {
		return nil, err
	}
	start := rand.IntN(128)
	for i := range 128 {
		o := byte(64 + (start+i)%128)
		f, err := os.OpenFile(filepath.Join(claimDir, fmt.Sprintf("ip-10.%d", o)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, err
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			return &ipBlock{second: o, lock: f}, nil
		}
		f.Close()
	}
	return nil, errors.New("no free 10.X.0.0/16 for test pods: 128 Worlds at once?")
}

func (b *ipBlock) release() {
	if b != nil && b.lock != nil {
		b.lock.Close() // drops the flock
	}
}

// addrs returns pod i's pod-side and host-side addresses.
func (b *ipBlock) addrs(i int) (pod, host net.IP) {
	third, fourth := byte(i/64), byte(4*(i%64))
	return net.IPv4(10, b.second, third, fourth+2).To4(), net.IPv4(10, b.second, third, fourth+1).To4()
}

// AddPod creates a pod netns (named <lab prefix>-<name>) with eth0 paired
// to a host veth in the node netns, addressed and routed like netlab's. It
// fails the test on error; the pod is removed in t.Cleanup.
func (w *World) AddPod(name string) *netlab.Pod {
	w.T.Helper()
	p, err := w.TryAddPod(name)
	if err != nil {
		w.T.Fatal(err)
	}
	return p
}

// TryAddPod is AddPod returning the error (for use outside the test
// goroutine). Pod indexes are never reused within a World, so a pod's
// addresses are new unless the caller reuses them with AddPodAt.
func (w *World) TryAddPod(name string) (*netlab.Pod, error) {
	w.podMu.Lock()
	if w.ips == nil {
		b, err := claimBlock()
		if err != nil {
			w.podMu.Unlock()
			return nil, err
		}
		w.ips = b
	}
	i := w.seq
	w.seq++
	w.podMu.Unlock()
	if i >= 16384 {
		return nil, fmt.Errorf("AddPod: more than 16384 pods in one World: reuse addresses with AddPodAt")
	}
	return w.AddPodAt(name, i)
}

// AddPodAt creates a pod like TryAddPod with the addresses of pod index
// slot (as a CNI reuses a freed IP): the previous holder of the slot must
// be gone.
func (w *World) AddPodAt(name string, slot int) (*netlab.Pod, error) {
	w.podMu.Lock()
	if w.ips == nil {
		b, err := claimBlock()
		if err != nil {
			w.podMu.Unlock()
			return nil, err
		}
		w.ips = b
	}
	ip, hostIP := w.ips.addrs(slot)
	w.vseq++
	veth := w.Lab.Prefix + "v" + strconv.FormatInt(int64(w.vseq), 36)
	w.podMu.Unlock()
	p := &netlab.Pod{
		Name:     w.Lab.Prefix + "-" + name,
		HostVeth: veth,
		IP:       ip,
		HostIP:   hostIP,
	}
	if len(p.HostVeth) > 15 {
		return nil, fmt.Errorf("host veth name %q is longer than 15 bytes", p.HostVeth)
	}
	p.Netns = "/var/run/netns/" + p.Name
	w.podMu.Lock()
	w.fast[p.Name] = p
	w.podMu.Unlock()
	if err := w.plumb(p); err != nil {
		w.RemovePod(p)
		return nil, fmt.Errorf("creating pod %s: %w", p.Name, err)
	}
	return p, nil
}

// plumb creates the netns and the veth pair and configures both ends.
func (w *World) plumb(p *netlab.Pod) error {
	podNs, err := newNamedNetns(p.Name)
	if err != nil {
		return err
	}
	defer podNs.Close()
	return w.plumbVeth(p, podNs)
}

// ReplaceVeth deletes the pod's veth, if any, and creates a new pair with
// the same names and addresses (a new host ifindex), as a CNI plugin
// re-plumbing a sandbox does.
func (w *World) ReplaceVeth(p *netlab.Pod) error {
	if err := w.DeleteVeth(p); err != nil {
		return err
	}
	podNs, err := netns.GetFromPath(p.Netns)
	if err != nil {
		return err
	}
	defer podNs.Close()
	return w.plumbVeth(p, podNs)
}

func (w *World) plumbVeth(p *netlab.Pod, podNs netns.NsHandle) error {
	nodeNs, err := netns.GetFromPath(w.NodeNetns())
	if err != nil {
		return err
	}
	defer nodeNs.Close()
	nh, err := netlink.NewHandleAt(nodeNs)
	if err != nil {
		return err
	}
	defer nh.Close()
	ph, err := netlink.NewHandleAt(podNs)
	if err != nil {
		return err
	}
	defer ph.Close()

	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.HostVeth}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(podNs))}
	if err := nh.LinkAdd(veth); err != nil {
		return fmt.Errorf("adding veth %s: %w", p.HostVeth, err)
	}
	host, err := nh.LinkByName(p.HostVeth)
	if err != nil {
		return err
	}
	if err := nh.AddrAdd(host, &netlink.Addr{IPNet: &net.IPNet{IP: p.HostIP, Mask: net.CIDRMask(30, 32)}}); err != nil {
		return fmt.Errorf("address on %s: %w", p.HostVeth, err)
	}
	if err := nh.LinkSetUp(host); err != nil {
		return err
	}
	lo, err := ph.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := ph.LinkSetUp(lo); err != nil {
		return err
	}
	eth0, err := ph.LinkByName("eth0")
	if err != nil {
		return err
	}
	if err := ph.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: p.IP, Mask: net.CIDRMask(30, 32)}}); err != nil {
		return fmt.Errorf("address on %s eth0: %w", p.Name, err)
	}
	if err := ph.LinkSetUp(eth0); err != nil {
		return err
	}
	if err := ph.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: p.HostIP}); err != nil {
		return fmt.Errorf("default route in %s: %w", p.Name, err)
	}
	return nil
}

// newNamedNetns creates /var/run/netns/<name> as `ip netns add` does, on a
// locked thread that is then discarded (it ends in the new netns).
func newNamedNetns(name string) (netns.NsHandle, error) {
	type res struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.NewNamed(name)
		ch <- res{h, err}
	}()
	r := <-ch
	if r.err != nil {
		return r.h, fmt.Errorf("creating netns %s: %w", name, r.err)
	}
	return r.h, nil
}

// DeleteVeth deletes a pod's host veth (its eth0 goes with it), as a CNI
// DEL does, leaving the netns.
func (w *World) DeleteVeth(p *netlab.Pod) error {
	nodeNs, err := netns.GetFromPath(w.NodeNetns())
	if err != nil {
		return err
	}
	defer nodeNs.Close()
	nh, err := netlink.NewHandleAt(nodeNs)
	if err != nil {
		return err
	}
	defer nh.Close()
	l, err := nh.LinkByName(p.HostVeth)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	return nh.LinkDel(l)
}

// RemovePod deletes a pod's veth and netns; a pod already gone is fine.
func (w *World) RemovePod(p *netlab.Pod) error {
	err := w.DeleteVeth(p)
	if uerr := unix.Unmount(p.Netns, unix.MNT_DETACH); uerr != nil && !errors.Is(uerr, unix.ENOENT) && !errors.Is(uerr, unix.EINVAL) {
		err = errors.Join(err, uerr)
	}
	if rerr := os.Remove(p.Netns); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	w.podMu.Lock()
	delete(w.fast, p.Name)
	w.podMu.Unlock()
	return err
}

// removeFastPods removes every pod netns carrying the lab's prefix (also
// those a failed test lost track of) and releases the address block.
func (w *World) removeFastPods() {
	w.podMu.Lock()
	pods := make([]*netlab.Pod, 0, len(w.fast))
	for _, p := range w.fast {
		pods = append(pods, p)
	}
	w.podMu.Unlock()
	for _, p := range pods {
		w.RemovePod(p)
	}
	// Whatever a failed test lost track of (netlab's own pods included:
	// its later `ip netns del` then fails quietly).
	if w.Lab != nil {
		entries, _ := os.ReadDir("/var/run/netns")
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), w.Lab.Prefix+"-") && e.Name() != w.Lab.Node {
				path := filepath.Join("/var/run/netns", e.Name())
				unix.Unmount(path, unix.MNT_DETACH)
				os.Remove(path)
			}
		}
	}
	w.ips.release()
}

// AddrsAt returns the addresses AddPodAt gives pod index slot: the pod's
// (its eth0, its IP in the API) and the host veth's.
func (w *World) AddrsAt(slot int) (pod, host net.IP, err error) {
	w.podMu.Lock()
	defer w.podMu.Unlock()
	if w.ips == nil {
		if w.ips, err = claimBlock(); err != nil {
			return nil, nil, err
		}
	}
	pod, host = w.ips.addrs(slot)
	return pod, host, nil
}
