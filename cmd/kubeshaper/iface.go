package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
)

func ifaceApply(args []string, out io.Writer) error {
	ifc, args, err := target("apply", args)
	if err != nil {
		return err
	}
	pol, err := parseRules(args)
	if err != nil {
		return err
	}
	sh, closeDP, err := openShaper()
	if err != nil {
		return err
	}
	defer closeDP()
	if err := sh.Apply(ifc, pol); err != nil {
		if errors.Is(err, shaper.ErrNeedsFQ) {
			return usageError{err.Error()}
		}
		return err
	}
	fmt.Fprintf(out, "%s: %s\n", ifc.Name, describePolicy(pol))
	if err := sh.PacingError(); err != nil {
		fmt.Fprintf(out, "%s: note: %v\n", ifc.Name, err)
	} else if err := sh.LastPodPacingError(); err != nil {
		fmt.Fprintf(out, "%s: note: its sockets are not paced (the policer alone enforces its drop-mode rules): %v\n", ifc.Name, err)
	}
	return nil
}

func ifaceClear(args []string, out io.Writer) error {
	ifc, args, err := target("clear", args)
	if err != nil {
		return err
	}
	if len(args) != 0 {
		return badInput("iface clear takes one interface, not %q", args)
	}
	sh, closeDP, err := openShaper()
	if err != nil {
		return err
	}
	defer closeDP()
	if err := sh.Clear(ifc); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: cleared\n", ifc.Name)
	return nil
}

// parseRules reads KEY=VALUE arguments into one policy. Each key may be
// given once; its value may hold several `;`-separated clauses.
func parseRules(args []string) (rules.Policy, error) {
	var pol rules.Policy
	seen := map[string]bool{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return pol, badInput("%q is not KEY=VALUE (e.g. bandwidth=\"100mbit egress\")", a)
		}
		key, ok := rules.KeyForShortName(k)
		if !ok {
			return pol, badInput("unknown rule %q in %q: use one of %s", k, a, strings.Join(rules.ShortNames(), ", "))
		}
		if seen[key] {
			return pol, badInput("rule %q given twice: put several clauses in one value, separated by ';'", k)
		}
		seen[key] = true
		p, err := rules.ParseValue(key, v)
		if err != nil {
			return pol, badInput("%v", err)
		}
		pol = rules.Merge([]rules.Policy{pol}, p)
	}
	return pol, nil
}

// target reads the interface an iface command acts on — a host veth, or
// the pod end (--netns, --pod-iface) — and where its directions run
// (--pod-side); it returns the remaining arguments.
func target(cmd string, args []string) (shaper.Interface, []string, error) {
	fs := flag.NewFlagSet("iface "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	netns := fs.String("netns", "", "the pod's network namespace (a path, e.g. /var/run/netns/NAME or /proc/PID/ns/net)")
	podIface := fs.String("pod-iface", "", "the pod's interface in --netns (e.g. eth0): the rule runs there, both directions")
	podSide := fs.String("pod-side", "", "directions to run on the pod's own interface: egress, ingress or both")
	yield := fs.String("tcx-yield-to", "", "comma-separated tcx program names that keep running before kubeshaper's (it is then reported not enforced where they end the hook)")
	if err := fs.Parse(args); err != nil {
		return shaper.Interface{}, nil, badInput("iface %s: %v", cmd, err)
	}
	rest := fs.Args()
	if *yield != "" {
		yieldTo = map[string]bool{}
		for _, n := range strings.Split(*yield, ",") {
			yieldTo[n] = true
		}
	}
	var ifc shaper.Interface
	var err error
	switch {
	case (*netns == "") != (*podIface == ""):
		return ifc, nil, badInput("iface %s: --netns and --pod-iface go together", cmd)
	case *netns != "":
		if ifc, err = resolvePodEnd(*netns, *podIface); err != nil {
			return ifc, nil, err
		}
		if cmd == "apply" {
			ifc.PodSide = [2]bool{true, true}
		}
	case len(rest) == 0:
		return ifc, nil, badInput("iface %s needs a host interface name (or --netns and --pod-iface)", cmd)
	default:
		if ifc, err = resolve(rest[0]); err != nil {
			return ifc, nil, err
		}
		rest = rest[1:]
	}
	switch *podSide {
	case "":
	case "egress":
		ifc.PodSide[rules.Egress] = true
	case "ingress":
		ifc.PodSide[rules.Ingress] = true
	case "both":
		ifc.PodSide = [2]bool{true, true}
	default:
		return ifc, nil, badInput("--pod-side %q: want egress, ingress or both", *podSide)
	}
	if (ifc.PodSide[0] || ifc.PodSide[1]) && ifc.Pod.NetnsPath == "" {
		return ifc, nil, badInput("--pod-side: the pod end of %s was not found", ifc.Name)
	}
	return ifc, rest, nil
}

// yieldTo is iface apply's --tcx-yield-to, for openShaper.
var yieldTo map[string]bool

// resolvePodEnd finds the host veth paired with the pod's interface: its
// peer, in this netns.
func resolvePodEnd(nsPath, name string) (shaper.Interface, error) {
	var peer int
	err := podnet.Do(nsPath, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if l.Type() != "veth" && l.Type() != "netkit" {
			return fmt.Errorf("%s is a %s, not a veth or netkit", name, l.Type())
		}
		peer = l.Attrs().ParentIndex
		return nil
	})
	if err != nil {
		return shaper.Interface{}, badInput("pod interface %s in %s: %v", name, nsPath, err)
	}
	host, err := net.InterfaceByIndex(peer)
	if err != nil {
		return shaper.Interface{}, badInput("the host end of %s in %s (ifindex %d) is not in this network namespace: run kubeshaper where the host veth lives: %v", name, nsPath, peer, err)
	}
	ifc, err := resolve(host.Name)
	if err != nil {
		return ifc, err
	}
	if ifc.Pod.NetnsPath == "" || ifc.Pod.IfName != name || !podnet.SameNetns(ifc.Pod.NetnsPath, nsPath) {
		return ifc, badInput("%s (ifindex %d here) is not the peer of %s in %s", host.Name, peer, name, nsPath)
	}
	ifc.Pod.NetnsPath = nsPath
	return ifc, nil
}

// resolve finds the host veth in this netns and, from it, the pod end.
func resolve(name string) (shaper.Interface, error) {
	link, err := net.InterfaceByName(name)
	if err != nil {
		return shaper.Interface{}, badInput("no interface %q in this network namespace (run kubeshaper where the host veth lives, e.g. ip netns exec NODE kubeshaper ...): %v", name, err)
	}
	ifc := shaper.Interface{Name: name, Index: link.Index}
	pod, err := podnet.PodEnd(name)
	if errors.Is(err, podnet.ErrNotVeth) {
		return ifc, badInput("%s is not a veth: kubeshaper shapes a pod's host-side veth", name)
	}
	if err == nil {
		ifc.Pod = pod
	}
	return ifc, nil
}

func openShaper() (*shaper.Shaper, func(), error) {
	dp, err := datapath.OpenDefaultWith(mapOptions)
	if err != nil {
		return nil, nil, err
	}
	sh := shaper.New(dp)
	sh.YieldTo = yieldTo
	return sh, func() { sh.ClosePacing(); dp.Close() }, nil
}

func describePolicy(p rules.Policy) string {
	if p.IsEmpty() {
		return "no rules (counted only)"
	}
	return p.String()
}
