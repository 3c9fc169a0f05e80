package datapath

import (
	"bytes"
	"errors"

	"github.com/cilium/ebpf"
)

// podNamesMap is a user-space-only pinned map from host ifindex to the
// pod's "namespace/name", written by the agent and read by the node CLI
// (kubeshaper flows --pod, kubeshaper status), which has no API access.
const podNamesMap = "ks_pod_names"

const podNameLen = 256

type podName [podNameLen]byte

func (d *Datapath) openPodNames() (*ebpf.Map, error) {
	return d.names.open(d, d.hashByIface(podNamesMap, 4, podNameLen))
}

// SetPodName records which pod a host interface belongs to.
func (d *Datapath) SetPodName(ifindex int, name string) error {
	m, err := d.openPodNames()
	if err != nil {
		return err
	}
	var v podName
	copy(v[:], name)
	return m.Put(uint32(ifindex), v)
}

// PodNames maps host ifindexes to "namespace/name" as the agent recorded.
func (d *Datapath) PodNames() (map[int]string, error) {
	m, err := d.openPodNames()
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	var k uint32
	var v podName
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[int(k)] = string(bytes.TrimRight(v[:], "\x00"))
	}
	return out, it.Err()
}

func (d *Datapath) forgetPodName(ifindex int) error {
	m, err := d.openPodNames()
	if err != nil {
		return err
	}
	if err := m.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}
