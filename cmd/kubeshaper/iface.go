package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
)

func ifaceApply(args []string, out io.Writer) error {
	if len(args) < 1 {
		return badInput("iface apply needs a host interface name")
	}
	pol, err := parseRules(args[1:])
	if err != nil {
		return err
	}
	ifc, err := resolve(args[0])
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
	return nil
}

func ifaceClear(args []string, out io.Writer) error {
	if len(args) != 1 {
		return badInput("iface clear takes exactly one host interface name")
	}
	ifc, err := resolve(args[0])
	if err != nil {
		return err
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
	return shaper.New(dp), func() { dp.Close() }, nil
}

func describePolicy(p rules.Policy) string {
	if p.IsEmpty() {
		return "no rules (counted only)"
	}
	return p.String()
}
