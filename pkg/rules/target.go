package rules

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Limits of a target. The datapath holds up to MaxTargetPorts ranges per
// target and one target per kind of rule and direction.
const (
	MaxTargetPeers = 16
	MaxTargetPorts = 8
)

// Proto is the transport protocol a target requires.
type Proto string

const (
	ProtoAny  Proto = ""
	ProtoTCP  Proto = "tcp"
	ProtoUDP  Proto = "udp"
	ProtoSCTP Proto = "sctp"
	// ProtoICMP is ICMP for IPv4 and ICMPv6 for IPv6.
	ProtoICMP Proto = "icmp"
)

// PortRange is an inclusive range of ports, Lo ≤ Hi, both in 1..65535.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// ServiceRef names a Service whose endpoints (and cluster IPs) are peers of
// a target. An empty Namespace means the annotated object's own.
type ServiceRef struct{ Namespace, Name string }

func (s ServiceRef) String() string {
	if s.Namespace == "" {
		return "svc:" + s.Name
	}
	return "svc:" + s.Namespace + "/" + s.Name
}

// Target limits a rule to some of a direction's packets: those exchanged
// with given peers (the destination of what the pod sends, the source of
// what it receives), on given ports (source or destination, as tcpdump's
// "port"), of a given protocol. Conditions combine with AND, the items of
// one condition with OR. The zero Target is every packet. A Target is a
// comparable value: == compares rules, and copying one shares nothing.
type Target struct {
	peers   [MaxTargetPeers]netip.Prefix
	nPeers  uint8
	ports   [MaxTargetPorts]PortRange
	nPorts  uint8
	Proto   Proto
	Service ServiceRef
}

// NewTarget builds a target, checking what the grammar checks. Prefixes
// are stored masked (10.1.2.3/8 is 10.0.0.0/8).
func NewTarget(proto Proto, peers []netip.Prefix, ports []PortRange, svc *ServiceRef) (Target, error) {
	var b targetBuilder
	if proto != ProtoAny {
		if err := b.option("proto", string(proto)); err != nil {
			return Target{}, err
		}
	}
	for _, p := range peers {
		if err := b.addPeer(p.String()); err != nil {
			return Target{}, err
		}
	}
	for _, r := range ports {
		if err := b.addPort(r.String()); err != nil {
			return Target{}, err
		}
	}
	if svc != nil {
		if err := b.addPeer(svc.String()); err != nil {
			return Target{}, err
		}
	}
	b.seenTo = len(peers) > 0 || svc != nil
	b.seenPort = len(ports) > 0
	return b.finish()
}

// IsZero reports whether the target is every packet.
func (t Target) IsZero() bool { return t == Target{} }

// Peers lists the peer prefixes (not the Service's endpoints).
func (t Target) Peers() []netip.Prefix { return append([]netip.Prefix(nil), t.peers[:t.nPeers]...) }

// Ports lists the port ranges.
func (t Target) Ports() []PortRange { return append([]PortRange(nil), t.ports[:t.nPorts]...) }

// HasPeers reports whether the target restricts peers (prefixes or a
// Service).
func (t Target) HasPeers() bool { return t.nPeers > 0 || t.Service.Name != "" }

// WithService returns the target with its Service's namespace filled in
// where the annotation left it to the annotated object's (ns).
func (t Target) WithService(ns string) Target {
	if t.Service.Name != "" && t.Service.Namespace == "" {
		t.Service.Namespace = ns
	}
	return t
}

// String renders the target's options as annotation text, "" for none:
// " to=10.0.0.0/8,svc:db/pg port=5432 proto=tcp" (note the leading space).
func (t Target) String() string {
	var b strings.Builder
	if t.HasPeers() {
		var items []string
		for _, p := range t.peers[:t.nPeers] {
			items = append(items, p.String())
		}
		if t.Service.Name != "" {
			items = append(items, t.Service.String())
		}
		b.WriteString(" to=" + strings.Join(items, ","))
	}
	if t.nPorts > 0 {
		var items []string
		for _, r := range t.ports[:t.nPorts] {
			items = append(items, r.String())
		}
		b.WriteString(" port=" + strings.Join(items, ","))
	}
	if t.Proto != ProtoAny {
		b.WriteString(" proto=" + string(t.Proto))
	}
	return b.String()
}

var (
	// Namespaces are DNS-1123 labels, Service names DNS-1035 labels.
	namespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	serviceRE   = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
)

// targetBuilder collects to=, port= and proto= options of one clause.
type targetBuilder struct {
	t                         Target
	seenTo, seenPort, seenPro bool
}

// option handles one NAME=VALUE of a clause if it is a target option;
// name is lower-case. handled is false for other options.
func (b *targetBuilder) handle(name, val string) (handled bool, err error) {
	switch name {
	case "to", "port", "proto":
		return true, b.option(name, val)
	}
	return false, nil
}

func (b *targetBuilder) option(name, val string) error {
	switch name {
	case "to":
		if b.seenTo {
			return fmt.Errorf("to= given twice: list peers in one, separated by \",\"")
		}
		b.seenTo = true
		for _, item := range strings.Split(val, ",") {
			if err := b.addPeer(item); err != nil {
				return err
			}
		}
	case "port":
		if b.seenPort {
			return fmt.Errorf("port= given twice: list ports in one, separated by \",\"")
		}
		b.seenPort = true
		for _, item := range strings.Split(val, ",") {
			if err := b.addPort(item); err != nil {
				return err
			}
		}
	case "proto":
		if b.seenPro {
			return fmt.Errorf("proto= given twice")
		}
		b.seenPro = true
		switch p := Proto(strings.ToLower(val)); p {
		case ProtoTCP, ProtoUDP, ProtoSCTP, ProtoICMP:
			b.t.Proto = p
		default:
			return fmt.Errorf("unknown protocol %s: want tcp, udp, sctp or icmp", q(val))
		}
	}
	return nil
}

func (b *targetBuilder) addPeer(item string) error {
	if item == "" {
		return fmt.Errorf("empty peer in to=: want CIDRs or addresses separated by \",\", e.g. to=10.0.0.0/8,fd00::/8")
	}
	if rest, ok := cutPrefixFold(item, "svc:"); ok {
		if b.t.Service.Name != "" {
			return fmt.Errorf("second Service %s in to=: one Service per rule", q(item))
		}
		ns, name, hasNS := strings.Cut(rest, "/")
		if !hasNS {
			ns, name = "", rest
		}
		if hasNS && !namespaceRE.MatchString(ns) {
			return fmt.Errorf("namespace %s in %s is invalid: want a DNS label (lowercase letters, digits, '-')", q(ns), q(item))
		}
		if !serviceRE.MatchString(name) {
			return fmt.Errorf("Service name %s in %s is invalid: want a DNS label starting with a letter", q(name), q(item))
		}
		b.t.Service = ServiceRef{Namespace: ns, Name: name}
		return nil
	}
	if int(b.t.nPeers) == MaxTargetPeers {
		return fmt.Errorf("too many peers in to=: at most %d prefixes", MaxTargetPeers)
	}
	var p netip.Prefix
	if strings.Contains(item, "/") {
		var err error
		if p, err = netip.ParsePrefix(item); err != nil {
			return fmt.Errorf("peer %s is not a CIDR prefix: want e.g. 10.0.0.0/8 or fd00::/8", q(item))
		}
	} else {
		a, err := netip.ParseAddr(item)
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("peer %s is not an IP address or CIDR prefix: want e.g. 10.1.2.3, 10.0.0.0/8 or svc:namespace/name", q(item))
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return fmt.Errorf("peer %s is an IPv4-mapped IPv6 address: write the IPv4 address", q(item))
	}
	b.t.peers[b.t.nPeers] = p.Masked()
	b.t.nPeers++
	return nil
}

func (b *targetBuilder) addPort(item string) error {
	if int(b.t.nPorts) == MaxTargetPorts {
		return fmt.Errorf("too many ports in port=: at most %d ports or ranges", MaxTargetPorts)
	}
	lo, hi, isRange := strings.Cut(item, "-")
	l, err := parsePort(lo)
	if err != nil {
		return err
	}
	h := l
	if isRange {
		if h, err = parsePort(hi); err != nil {
			return err
		}
		if h < l {
			return fmt.Errorf("port range %s is empty: want LOW-HIGH with LOW ≤ HIGH", q(item))
		}
	}
	b.t.ports[b.t.nPorts] = PortRange{Lo: l, Hi: h}
	b.t.nPorts++
	return nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %s is invalid: want a number from 1 to 65535 or a range such as 8080-8090", q(s))
	}
	return uint16(n), nil
}

// finish checks the options together.
func (b *targetBuilder) finish() (Target, error) {
	if b.t.nPorts > 0 && b.t.Proto == ProtoICMP {
		return Target{}, fmt.Errorf("port= with proto=icmp: ICMP has no ports")
	}
	return b.t, nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}
