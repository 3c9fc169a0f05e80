package agentenv

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// AddPod's pods are netlab pods (netlab.Lab.NewPod: netlink, a few ms
// each), so that tests can have hundreds of pods, or churn through
// thousands. Each World takes a
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
	ip, hostIP, err := w.addrsLocked(slot)
	if err != nil {
		w.podMu.Unlock()
		return nil, err
	}
	w.vseq++
	veth := w.Lab.Prefix + "v" + strconv.FormatInt(int64(w.vseq), 36)
	w.podMu.Unlock()
	return w.Lab.NewPod(name, netlab.PodSpec{HostVeth: veth, IP: ip, HostIP: hostIP, PrefixLen: 30})
}

// ReplaceVeth re-plumbs a pod's veth pair (a new host ifindex), as a CNI
// plugin re-plumbing a sandbox does (netlab.Lab.ReplaceVeth).
func (w *World) ReplaceVeth(p *netlab.Pod) error { return w.Lab.ReplaceVeth(p) }

// DeleteVeth deletes a pod's host veth, leaving the netns, as a CNI DEL
// does (netlab.Lab.DeleteVeth).
func (w *World) DeleteVeth(p *netlab.Pod) error { return w.Lab.DeleteVeth(p) }

// RemovePod deletes a pod's veth and netns; a pod already gone is fine.
func (w *World) RemovePod(p *netlab.Pod) error { return w.Lab.RemovePod(p) }

// removeFastPods removes every pod (also those a failed test lost track
// of) and releases the address block.
func (w *World) removeFastPods() {
	w.Lab.RemovePods()
	w.ips.release()
}

// AddrsAt returns the addresses AddPodAt gives pod index slot: the pod's
// (its eth0, its IP in the API) and the host veth's.
func (w *World) AddrsAt(slot int) (pod, host net.IP, err error) {
	w.podMu.Lock()
	defer w.podMu.Unlock()
	return w.addrsLocked(slot)
}

// addrsLocked is AddrsAt with podMu held: the World claims its block on
// first use.
func (w *World) addrsLocked(slot int) (pod, host net.IP, err error) {
	if w.ips == nil {
		if w.ips, err = claimBlock(); err != nil {
			return nil, nil, err
		}
	}
	pod, host = w.ips.addrs(slot)
	return pod, host, nil
}
