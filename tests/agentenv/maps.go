package agentenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// Pinned map names the tests read directly (the agent owns them).
const (
	RulesMap = "ks_rules"
	StatsMap = "ks_stats"
)

// Maps are the agent's pinned maps, opened from the pin directory without
// loading any program (datapath.Open would verify and load the programs
// on every call): a datapath.OpenPinned view.
type Maps struct {
	dp *datapath.Datapath
}

// Maps opens the pinned maps; missing pins (no agent ran yet, or a full
// cleanup removed them) give empty Maps, whose lookups find nothing.
func (w *World) Maps() (*Maps, error) { return OpenMaps(w.PinDir) }

// OpenMaps opens the maps pinned in dir.
func OpenMaps(dir string) (*Maps, error) {
	dp, err := datapath.OpenPinned(dir)
	if errors.Is(err, os.ErrNotExist) {
		return &Maps{}, nil
	}
	if err != nil {
		return nil, err
	}
	return &Maps{dp: dp}, nil
}

// Present reports whether an agent's maps are pinned.
func (m *Maps) Present() bool { return m.dp != nil }

// Datapath is the view itself (nil when nothing is pinned).
func (m *Maps) Datapath() *datapath.Datapath { return m.dp }

// Close releases the handles.
func (m *Maps) Close() {
	if m.dp != nil {
		m.dp.Close()
	}
}

// Rule returns the rule of ifindex and dir.
func (m *Maps) Rule(ifindex int, dir rules.Direction) (datapath.Config, bool, error) {
	if m.dp == nil {
		return datapath.Config{}, false, nil
	}
	return m.dp.Lookup(datapath.KeyOf(ifindex, dir))
}

// Counters returns the summed counters of ifindex and dir.
func (m *Maps) Counters(ifindex int, dir rules.Direction) (datapath.Counters, bool, error) {
	if m.dp == nil {
		return datapath.Counters{}, false, nil
	}
	return m.dp.Counters(datapath.KeyOf(ifindex, dir))
}

// Keys lists the keys the maps hold entries for.
func (m *Maps) Keys() ([]datapath.Key, error) {
	if m.dp == nil {
		return nil, nil
	}
	return m.dp.Keys()
}

// AllRules reads every rule, by key.
func (m *Maps) AllRules() (map[datapath.Key]datapath.Config, error) {
	out := map[datapath.Key]datapath.Config{}
	ks, err := m.Keys()
	if err != nil {
		return nil, err
	}
	for _, k := range ks {
		c, ok, err := m.dp.Lookup(k)
		if err != nil {
			return nil, err
		}
		if ok {
			out[k] = c
		}
	}
	return out, nil
}

// RuleCount is the number of keys with a rule.
func (m *Maps) RuleCount() (int, error) {
	all, err := m.AllRules()
	return len(all), err
}

// PinnedObjects lists every object pinned under the pin directory with
// its entry count for maps (-1 for other objects), whatever its name: what
// a leak check must find empty, including maps added after this helper.
func (w *World) PinnedObjects() (map[string]int, error) { return PinnedObjects(w.PinDir) }

// PinnedObjects is World.PinnedObjects for any directory.
func PinnedObjects(dir string) (map[string]int, error) {
	out := map[string]int{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		mp, err := ebpf.LoadPinnedMap(path, nil)
		if err != nil {
			out[rel] = -1 // a program or link pin
			return nil
		}
		defer mp.Close()
		n, err := countKeys(mp)
		if filepath.Base(rel) == "ks_flows" && mp.Type() == ebpf.Array {
			n, err = datapath.FlowRecords(mp) // a table: its ways in use
		}
		if err != nil {
			return err
		}
		if filepath.Base(rel) == "ksp_node_netns" {
			n -= nodeOwnNetns(mp)
		}
		out[rel] = n
		return nil
	})
	return out, err
}

// nodeOwnNetns counts the entries of socket pacing's netns map that stand
// for the node's own network namespace (ifindex 0, pkg/sockpace AddNetns):
// node state that lives as long as pacing is in use, not a pod's leftover.
// Every other entry is a pod's and must go with it.
func nodeOwnNetns(mp *ebpf.Map) int {
	var (
		cookie uint64
		ifx    uint32
		n      int
	)
	it := mp.Iterate()
	for it.Next(&cookie, &ifx) {
		if ifx == 0 {
			n++
		}
	}
	return n
}

func countKeys(mp *ebpf.Map) (int, error) {
	if mp.Type() == ebpf.Array || mp.Type() == ebpf.PerCPUArray {
		return 0, nil // fixed size: entries always "exist"
	}
	if mp.Type() == ebpf.SkStorage {
		return 0, nil // per-socket state (ksp_socks): freed with each socket, not listable
	}
	ks := mp.KeySize()
	cur := make([]byte, ks)
	next := make([]byte, ks)
	n := 0
	var prev any
	for {
		err := mp.NextKey(prev, next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
		copy(cur, next)
		prev = cur
		if n > 1<<20 {
			return n, fmt.Errorf("%s: more than 2^20 keys", mp)
		}
	}
}

// FormatCounts renders PinnedObjects' result: "ks_rules=0 ks_stats=0".
func FormatCounts(m map[string]int) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, k := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// TotalEntries sums the entry counts (maps only).
func TotalEntries(m map[string]int) int {
	n := 0
	for _, v := range m {
		if v > 0 {
			n += v
		}
	}
	return n
}
