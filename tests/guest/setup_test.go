package guest

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
	"github.com/kubeshaper/kubeshaper/tests/kfeature"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
	"github.com/kubeshaper/kubeshaper/tests/shaperlab"
)

// fixture is shaperlab's node with two pods, a (the shaped one) and b
// (its peer), and a datapath pinned in a private directory.
type fixture struct{ *shaperlab.Fixture }

// needFQ skips where the kernel is built without sch_fq and fails where it
// is built with it but fq still cannot be created.
func needFQ(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, qdiscs, BPF")
	}
	kfeature.SkipIfNotConfigured(t, "CONFIG_NET_SCH_FQ", kfeature.HaveSchFQ())
}

func setup(t *testing.T) *fixture {
	t.Helper()
	needFQ(t)
	return &fixture{shaperlab.New(t, "gu")}
}

// errNotYet is returned by apply for rules pkg/shaper does not support yet
// (pace and delay on pod egress, at the time of writing).
var errNotYet = errors.New("not supported yet")

func (f *fixture) apply(t *testing.T, ifc shaper.Interface, pol rules.Policy) error {
	t.Helper()
	err := f.Fixture.Apply(ifc, pol)
	if err != nil && strings.Contains(err.Error(), "not supported") && strings.Contains(err.Error(), "yet") {
		return errNotYet
	}
	if err != nil {
		t.Fatalf("apply %v to %s: %v", pol, ifc.Name, err)
	}
	return nil
}

// flow names a direction of the shaped pod a's traffic: the rule's
// direction, who sends to whom, and where kubeshaper's fq for it sits.
type flow struct {
	dir         rules.Direction
	from, to    *netlab.Pod
	fqNs, fqDev string
}

func (f *fixture) flows() []flow {
	return []flow{
		// What a receives: paced at the host veth's egress, its root fq.
		{rules.Ingress, f.B, f.A, "/var/run/netns/" + f.Lab.Node, f.A.HostVeth},
		// What a sends: paced at a's own eth0 (pkg/shaper), its root fq.
		{rules.Egress, f.A, f.B, f.A.Netns, "eth0"},
	}
}
