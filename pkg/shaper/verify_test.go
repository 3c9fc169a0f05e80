package shaper

import (
	"strings"
	"testing"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// TestJudge: the judgement's rules, as pure logic (the real-traffic cases
// are in tests/cni).
func TestJudge(t *testing.T) {
	ours := Placement{Hook: "ingress", Attachment: "tcx link 1 (prog 2)"}
	foreignOK := attach.Entry{TCX: true, ProgID: 7, LinkID: 8, Name: "cil_from_contai"}
	traffic := func(iface, seen uint64) (*Traffic, *Traffic) {
		return &Traffic{IfaceOK: true}, &Traffic{IfaceOK: true, Iface: [2]uint64{iface, iface}, Ours: [2]uint64{seen, seen}}
	}
	cases := []struct {
		name      string
		pl        Placement
		iface     uint64
		seen      uint64
		enforced  bool
		bypassed  bool
		reasonHas string
	}{
		{"first, no traffic", ours, 0, 0, true, false, ""},
		{"first, sees all", ours, 1000, 1000, true, false, ""},
		{"first, GSO: sees more segments than skbs", ours, 1000, 5000, true, false, ""},
		{"first, bypassed (peer redirect)", ours, 1000, 3, false, true, "deliveries skip the host veth"},
		{"too little traffic to judge", ours, BypassMinPackets - 1, 0, true, false, ""},
		{"missing", Placement{Hook: "ingress"}, 0, 0, false, false, "not attached"},
		{"foreign ahead, no traffic", Placement{Hook: "ingress", Attachment: "x", Ahead: []attach.Entry{foreignOK}}, 0, 0, false, false, "not verified: tcx program \"cil_from_contai\" (id 7, link 8)"},
		{"foreign ahead, ends the hook", Placement{Hook: "ingress", Attachment: "x", Ahead: []attach.Entry{foreignOK}}, 1000, 0, false, true, "running before it: tcx program"},
		{"foreign ahead, passes on", Placement{Hook: "ingress", Attachment: "x", Yielded: []attach.Entry{foreignOK}}, 1000, 990, true, false, "passes the traffic on"},
	}
	for _, c := range cases {
		b, a := traffic(c.iface, c.seen)
		e := Judge([2]Placement{c.pl, c.pl}, b, a)[rules.Egress]
		if e.Enforced != c.enforced || e.Bypassed != c.bypassed || !strings.Contains(e.Reason, c.reasonHas) {
			t.Errorf("%s: %+v, want enforced %v bypassed %v reason containing %q", c.name, e, c.enforced, c.bypassed, c.reasonHas)
		}
	}
	// Without a window (no readings): placement alone.
	if e := Judge([2]Placement{ours, ours}, nil, nil); !e[0].Enforced || !e[1].Enforced {
		t.Errorf("no readings, first: %+v", e)
	}
}
