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

// Maps are the agent's pinned rule and counter maps, opened from the pin
// directory without loading any program (datapath.Open would verify and
// load both programs on every call).
type Maps struct {
	Rules, Stats *ebpf.Map
}

// Maps opens the pinned maps; missing pins (no agent ran yet, or a full
// cleanup removed them) give empty Maps, whose lookups find nothing.
func (w *World) Maps() (*Maps, error) { return OpenMaps(w.PinDir) }

// OpenMaps opens the rule and counter maps pinned in dir.
func OpenMaps(dir string) (*Maps, error) {
	m := &Maps{}
	var err error
	if m.Rules, err = loadPinned(filepath.Join(dir, RulesMap)); err != nil {
		return nil, err
	}
	if m.Stats, err = loadPinned(filepath.Join(dir, StatsMap)); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func loadPinned(path string) (*ebpf.Map, error) {
	mp, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening pinned map %s: %w", path, err)
	}
	return mp, nil
}

// Close releases the handles.
func (m *Maps) Close() {
	for _, mp := range []*ebpf.Map{m.Rules, m.Stats} {
		if mp != nil {
			mp.Close()
		}
	}
}

// Rule returns the rule of ifindex and dir.
func (m *Maps) Rule(ifindex int, dir rules.Direction) (datapath.Config, bool, error) {
	var c datapath.Config
	if m.Rules == nil {
		return c, false, nil
	}
	err := m.Rules.LookupWithFlags(datapath.KeyOf(ifindex, dir), &c, ebpf.LookupLock)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return c, false, nil
	}
	return c, err == nil, err
}

// Keys lists the keys present in the rule or counter map.
func (m *Maps) Keys() ([]datapath.Key, error) {
	seen := map[datapath.Key]bool{}
	var out []datapath.Key
	for _, mp := range []*ebpf.Map{m.Rules, m.Stats} {
		if mp == nil {
			continue
		}
		ks, err := keysOf[datapath.Key](mp)
		if err != nil {
			return nil, err
		}
		for _, k := range ks {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out, nil
}

// AllRules reads every rule, by key.
func (m *Maps) AllRules() (map[datapath.Key]datapath.Config, error) {
	out := map[datapath.Key]datapath.Config{}
	if m.Rules == nil {
		return out, nil
	}
	ks, err := keysOf[datapath.Key](m.Rules)
	if err != nil {
		return nil, err
	}
	for _, k := range ks {
		var c datapath.Config
		if err := m.Rules.LookupWithFlags(k, &c, ebpf.LookupLock); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			return nil, err
		}
		out[k] = c
	}
	return out, nil
}

// RuleCount is the number of keys in the rule map (cheap: no values read).
func (m *Maps) RuleCount() (int, error) {
	if m.Rules == nil {
		return 0, nil
	}
	ks, err := keysOf[datapath.Key](m.Rules)
	return len(ks), err
}

func keysOf[K comparable](mp *ebpf.Map) ([]K, error) {
	var out []K
	var cur any // untyped nil asks for the first key
	for {
		var next K
		err := mp.NextKey(cur, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", mp, err)
		}
		out = append(out, next)
		cur = next
		if len(out) > 1<<20 {
			return nil, fmt.Errorf("listing %s: more than 2^20 keys (a key deleted under the walk?)", mp)
		}
	}
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
		if err != nil {
			return err
		}
		out[rel] = n
		return nil
	})
	return out, err
}

func countKeys(mp *ebpf.Map) (int, error) {
	if mp.Type() == ebpf.Array || mp.Type() == ebpf.PerCPUArray {
		return 0, nil // fixed size: entries always "exist"
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
