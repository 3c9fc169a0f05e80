package reconcile

import (
	"net"
	"net/netip"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
)

// Node is everything the reconciler needs of the node's kernel state:
// finding a pod's interfaces and putting rules on them. *shaper.Node is
// the real one; the reconciler's unit tests give it a fake, so what the
// reconciler decides (adoption, retries, leftovers, Events) is tested
// without root.
type Node interface {
	// Resolve finds the interface of the pod holding ip; the errors
	// shaper.ErrNetnsNotFound, ErrNotVeth and ErrAmbiguousIP say why not.
	Resolve(ip net.IP) (shaper.Interface, error)
	// Exists reports whether the host veth still exists under its index.
	Exists(ifc shaper.Interface) bool
	// Intact reports whether the kernel still holds what Apply put there.
	Intact(ifc shaper.Interface) bool
	// Apply makes ifc carry pol, all or nothing.
	Apply(ifc shaper.Interface, pol rules.Policy) error
	// RecordPod names the pod owning the host veth, for the node CLI.
	RecordPod(ifindex int, pod string) error
	// Clear removes everything kubeshaper put on ifc (only the map
	// entries when the veth is gone).
	Clear(ifc shaper.Interface) error

	// ProgramName is the filter name a custom program has as its file
	// and parameters are now.
	ProgramName(p rules.Program, d rules.Direction) (string, error)
	// ApplyPrograms puts the custom programs pol asks for on ifc and
	// removes the others, per direction.
	ApplyPrograms(ifc shaper.Interface, pol rules.Policy) [2]shaper.ProgramStatus
	// ProgramsIntact reports whether ifc carries exactly these program
	// filters ("": none).
	ProgramsIntact(ifc shaper.Interface, want [2]string) bool
	// HasPrograms reports whether the interface has (or may have) a
	// custom program filter.
	HasPrograms(ifc shaper.Interface) bool

	// CollectLeftovers clears every interface with kubeshaper state that
	// claimed does not claim, and returns those it cleared.
	CollectLeftovers(claimed func(ifindex int) bool) ([]int, error)

	// RuleSetClock, AnnounceRuleSet and ForgetRuleSets keep the pinned
	// clocks of time-limited rules (kubeshaper.io/duration, until).
	RuleSetClock(podUID, ruleSet string, now time.Time) (first time.Time, announced bool, err error)
	AnnounceRuleSet(podUID, ruleSet string) error
	ForgetRuleSets(livePodUIDs []string) error

	// UseServicePeers sets how Services targeted by rules resolve.
	UseServicePeers(func(rules.ServiceRef) []netip.Prefix)
	// RemovePins removes the pinned maps (the end of a full cleanup),
	// and with them the socket-pacing program.
	RemovePins() error
	// PacingError is why drop-mode rules are not socket-paced here.
	PacingError() error
}

var _ Node = (*shaper.Node)(nil)
