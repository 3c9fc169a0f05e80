package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeshaper/kubeshaper/pkg/kube"
	"github.com/kubeshaper/kubeshaper/pkg/nodestatus"
	"github.com/kubeshaper/kubeshaper/pkg/reconcile"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// explainCmd shows one pod's rules and why: its own annotations and those
// of the Services selecting it, parsed with the agent's grammar and merged
// by the agent's precedence (pkg/reconcile.DesiredFor, the same code), the
// invalid ones with the agent's Event text, and what its node's agent
// actually has in effect.
func explainCmd(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	var k kubeFlags
	k.add(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"explain takes one pod name"}
	}
	cs, ns, err := k.client()
	if err != nil {
		return err
	}
	ctx := context.Background()
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, pos[0], metav1.GetOptions{})
	if err != nil {
		return err
	}
	svcList, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing the Services of %s: %w", ns, err)
	}
	all := make([]*corev1.Service, len(svcList.Items))
	for i := range svcList.Items {
		all[i] = &svcList.Items[i]
	}
	svcs := kube.SelectingServices(pod, all)
	want := reconcile.DesiredFor(pod, svcs)

	fmt.Fprintf(out, "Pod %s/%s on node %s\n", ns, pod.Name, dash(pod.Spec.NodeName))
	srcs := make([]nodestatus.SourcePolicy, len(want.Sources))
	for i, s := range want.Sources {
		srcs[i] = nodestatus.SourcePolicy{Kind: s.Kind, Name: s.Name, Policy: s.Policy}
	}
	_, wins := nodestatus.Origins(want.Policy, srcs)
	fmt.Fprintln(out, "\nSources (the pod's own rule of a kind and direction wins; else the first Service by name):")
	for i, s := range want.Sources {
		var ann map[string]string
		if s.Kind == "Pod" {
			ann = pod.Annotations
		} else {
			for _, svc := range svcs {
				if svc.Name == s.Name {
					ann = svc.Annotations
				}
			}
		}
		fmt.Fprintf(out, "  %s %s\n", s.Kind, s.Name)
		keys := kubeshaperKeys(ann)
		if len(keys) == 0 {
			fmt.Fprintln(out, "    no kubeshaper annotations")
		}
		for _, key := range keys {
			fmt.Fprintf(out, "    %s: %q\n", key, ann[key])
		}
		if !s.Policy.IsEmpty() {
			fmt.Fprintf(out, "    asks for: %s\n", s.Policy)
		}
		if !s.Limit.IsZero() {
			fmt.Fprintf(out, "    time limit: %s\n", s.Limit)
		}
		switch {
		case len(wins[i]) > 0:
			fmt.Fprintf(out, "    provides: %s\n", strings.Join(wins[i], ", "))
		case !s.Policy.IsEmpty():
			fmt.Fprintln(out, "    provides nothing: overridden (by the pod, or a Service earlier by name)")
		}
	}
	if len(svcs) == 0 {
		fmt.Fprintln(out, "  (no Service selects this pod)")
	}

	var invalid []string
	for _, e := range want.PodErrors {
		invalid = append(invalid, fmt.Sprintf("  Pod %s: %s", pod.Name, e.Error()))
	}
	for _, s := range svcs {
		for _, e := range want.ServiceErrors[s.Name] {
			invalid = append(invalid, fmt.Sprintf("  Service %s: %s", s.Name, e.Error()))
		}
	}
	if len(invalid) > 0 {
		fmt.Fprintln(out, "\nInvalid (left out; the other keys still apply):")
		for _, l := range invalid {
			fmt.Fprintln(out, l)
		}
	}
	if !want.Monitor {
		fmt.Fprintf(out, "\n%s: \"false\": not counted (rules, if any, still apply)\n", reconcile.MonitorAnnotation)
	}
	fmt.Fprintf(out, "\nEffective (computed here with the agent's grammar): %s\n", want.Policy)

	printEvents(ctx, out, cs, ns, pod, svcs)
	printInEffect(ctx, out, cs, k, pod, want.Policy)
	return nil
}

// printInEffect asks the pod's node's agent what it has applied.
func printInEffect(ctx context.Context, out io.Writer, cs kubernetes.Interface, k kubeFlags, pod *corev1.Pod, want rules.Policy) {
	if pod.Spec.NodeName == "" {
		fmt.Fprintln(out, "In effect: the pod is not scheduled yet")
		return
	}
	answers, err := gather(ctx, cs, k.agentNS, pod.Spec.NodeName, pod.Namespace, k.timeout)
	if err != nil {
		fmt.Fprintf(out, "In effect on %s: unknown (%v)\n", pod.Spec.NodeName, err)
		return
	}
	if len(answers) == 0 {
		fmt.Fprintf(out, "In effect on %s: unknown (no kubeshaper agent on that node)\n", pod.Spec.NodeName)
		return
	}
	a := answers[0]
	if a.Status == nil {
		fmt.Fprintf(out, "In effect on %s: unknown (%s)\n", pod.Spec.NodeName, a.Err)
		return
	}
	for _, p := range a.Status.Pods {
		if p.Name != pod.Name || p.UID != string(pod.UID) {
			continue
		}
		fmt.Fprintf(out, "In effect on %s (agent %s, veth %s): %s\n", a.Node, a.AgentPod, p.HostVeth, p.Rules)
		if p.Rules != want.String() {
			fmt.Fprintln(out, "  differs from the computed rules: a time limit ended some, or the agent has not caught up yet")
		}
		if p.Enforced != nil && !*p.Enforced {
			fmt.Fprintf(out, "  NOT ENFORCED: %s\n", p.Reason)
		}
		for _, d := range p.Directions {
			req, ach := requestedAchieved(d)
			fmt.Fprintf(out, "  %s: %s; requested %s, achieved %s; drops %s; enforced %s\n", d.Direction, d.Rule, req, ach, drops(d.Drops), enforcedString(p, d))
			if d.Attachment != "" {
				fmt.Fprintf(out, "    attached: %s\n", d.Attachment)
			}
		}
		return
	}
	fmt.Fprintf(out, "In effect on %s: nothing (the agent does not shape or count this pod: hostNetwork, not running, not selected by --namespace-selector, or kubeshaper.io/monitor=false without rules)\n", a.Node)
}

// printEvents lists the agent's Events on the pod and its Services.
func printEvents(ctx context.Context, out io.Writer, cs kubernetes.Interface, ns string, pod *corev1.Pod, svcs []*corev1.Service) {
	uids := map[string]string{string(pod.UID): "Pod " + pod.Name}
	for _, s := range svcs {
		uids[string(s.UID)] = "Service " + s.Name
	}
	evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "source=kubeshaper-agent"})
	if err != nil {
		// Some API servers do not index source: filter here instead.
		if evs, err = cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{}); err != nil {
			fmt.Fprintf(out, "\nEvents: cannot list (%v)\n", err)
			return
		}
	}
	var mine []corev1.Event
	for _, e := range evs.Items {
		if _, ok := uids[string(e.InvolvedObject.UID)]; ok && e.Source.Component == "kubeshaper-agent" {
			mine = append(mine, e)
		}
	}
	sort.Slice(mine, func(i, j int) bool { return eventTime(mine[i]).Before(eventTime(mine[j])) })
	if len(mine) == 0 {
		fmt.Fprintln(out, "\nEvents from kubeshaper: none")
		return
	}
	fmt.Fprintln(out, "\nEvents from kubeshaper (oldest first):")
	for _, e := range mine {
		fmt.Fprintf(out, "  %s %s %s (x%d, %s ago): %s\n", uids[string(e.InvolvedObject.UID)], e.Type, e.Reason,
			max(e.Count, 1), time.Since(eventTime(e)).Round(time.Second), e.Message)
	}
}

func eventTime(e corev1.Event) time.Time {
	if !e.LastTimestamp.IsZero() {
		return e.LastTimestamp.Time
	}
	if !e.EventTime.IsZero() {
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// kubeshaperKeys are the annotation keys kubeshaper reads, sorted.
func kubeshaperKeys(ann map[string]string) []string {
	var keys []string
	for k := range ann {
		if strings.HasPrefix(k, rules.Prefix) || k == rules.KeyEgressBandwidth || k == rules.KeyIngressBandwidth {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}
