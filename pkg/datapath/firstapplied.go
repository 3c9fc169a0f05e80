package datapath

import (
	"crypto/sha256"
	"errors"
	"time"

	"github.com/cilium/ebpf"
)

// firstAppliedMap is a user-space-only pinned map: when each time-limited
// rule set (kubeshaper.io/duration) was first applied to a pod, so that a
// restarted agent ends it on time rather than starting its clock again.
const firstAppliedMap = "ks_first_applied"

// RuleSetKey names one pod's rule set of one annotated object: the pod's
// UID and a digest of the object and its rule annotations (a change to
// the rules starts a new clock).
type RuleSetKey struct {
	Pod    [16]byte
	Digest [16]byte
}

// NewRuleSetKey digests the pod UID and the rule set's description.
func NewRuleSetKey(podUID, ruleSet string) RuleSetKey {
	var k RuleSetKey
	p := sha256.Sum256([]byte(podUID))
	d := sha256.Sum256([]byte(ruleSet))
	copy(k.Pod[:], p[:])
	copy(k.Digest[:], d[:])
	return k
}

// RuleSetRecord is what is kept per rule set.
type RuleSetRecord struct {
	FirstNs uint64 // wall clock, Unix ns
	// Announced is set once the end was reported (an Event), so that a
	// restarted agent does not report it again.
	Announced uint64
}

// FirstApplied returns the time stamp for rule set k.
func (r RuleSetRecord) FirstApplied() time.Time { return time.Unix(0, int64(r.FirstNs)) }

func (d *Datapath) openFirstApplied() (*ebpf.Map, error) {
	return d.first.open(d, d.hashByIface(firstAppliedMap, 32, 16))
}

// RuleSet returns the record of k, creating it with now as the first
// application if there is none.
func (d *Datapath) RuleSet(k RuleSetKey, now time.Time) (RuleSetRecord, error) {
	m, err := d.openFirstApplied()
	if err != nil {
		return RuleSetRecord{}, err
	}
	var r RuleSetRecord
	err = m.Lookup(k, &r)
	if err == nil {
		return r, nil
	}
	if !errors.Is(err, ebpf.ErrKeyNotExist) {
		return r, err
	}
	r = RuleSetRecord{FirstNs: uint64(now.UnixNano())}
	if err := m.Update(k, r, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return r, err
	}
	return r, m.Lookup(k, &r)
}

// AnnounceRuleSet marks k's end as reported.
func (d *Datapath) AnnounceRuleSet(k RuleSetKey) error {
	m, err := d.openFirstApplied()
	if err != nil {
		return err
	}
	var r RuleSetRecord
	if err := m.Lookup(k, &r); err != nil {
		return err
	}
	r.Announced = 1
	return m.Update(k, r, ebpf.UpdateExist)
}

// ForgetRuleSets deletes the records of the pods keep does not want (by
// the Pod half of the key); keep nil deletes everything.
func (d *Datapath) ForgetRuleSets(keep func(pod [16]byte) bool) error {
	m, err := d.openFirstApplied()
	if err != nil {
		return err
	}
	var (
		k     RuleSetKey
		r     RuleSetRecord
		stale []RuleSetKey
	)
	it := m.Iterate()
	for it.Next(&k, &r) {
		if keep == nil || !keep(k.Pod) {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

// PodKey is the Pod half of a RuleSetKey for a UID.
func PodKey(podUID string) [16]byte { return NewRuleSetKey(podUID, "").Pod }
