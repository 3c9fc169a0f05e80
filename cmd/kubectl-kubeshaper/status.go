package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kubeshaper/kubeshaper/pkg/nodestatus"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// report is `status -o json|yaml`.
type report struct {
	// Nodes lists the nodes whose agent answered.
	Nodes []string `json:"nodes"`
	// Unanswered lists the nodes that did not, and why.
	Unanswered []answer `json:"unanswered"`
	Pods       []podRow `json:"pods"`
}

type podRow struct {
	Node string `json:"node"`
	nodestatus.Pod
}

func statusCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	var k kubeFlags
	k.add(fs)
	fs.BoolVar(&k.allNamespaces, "A", false, "every namespace")
	fs.BoolVar(&k.allNamespaces, "all-namespaces", false, "every namespace")
	var output string
	fs.StringVar(&output, "o", "", "output: json, yaml or wide")
	fs.StringVar(&output, "output", "", "output: json, yaml or wide")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usageError{"status takes at most one pod name"}
	}
	switch output {
	case "", "wide", "json", "yaml":
	default:
		return usageError{fmt.Sprintf("-o %q: want json, yaml or wide", output)}
	}
	if k.allNamespaces && len(pos) == 1 {
		return usageError{"a pod name needs a namespace, not -A"}
	}
	cs, ns, err := k.client()
	if err != nil {
		return err
	}
	if k.allNamespaces {
		ns = ""
	}
	ctx := context.Background()
	node := ""
	if len(pos) == 1 {
		// One pod: only its node's agent is asked.
		p, err := cs.CoreV1().Pods(ns).Get(ctx, pos[0], metav1.GetOptions{})
		if err != nil {
			return err
		}
		if node = p.Spec.NodeName; node == "" {
			return fmt.Errorf("pod %s/%s is not scheduled on a node yet", ns, pos[0])
		}
	}
	answers, err := gather(ctx, cs, k.agentNS, node, ns, k.timeout)
	if err != nil {
		return err
	}
	rep := report{Nodes: []string{}, Unanswered: []answer{}, Pods: []podRow{}}
	for _, a := range answers {
		if a.Status == nil {
			rep.Unanswered = append(rep.Unanswered, a)
			continue
		}
		rep.Nodes = append(rep.Nodes, a.Node)
		for _, p := range a.Status.Pods {
			if len(pos) == 1 && p.Name != pos[0] {
				continue
			}
			rep.Pods = append(rep.Pods, podRow{Node: a.Node, Pod: p})
		}
	}
	sort.SliceStable(rep.Pods, func(i, j int) bool {
		if rep.Pods[i].Namespace != rep.Pods[j].Namespace {
			return rep.Pods[i].Namespace < rep.Pods[j].Namespace
		}
		return rep.Pods[i].Name < rep.Pods[j].Name
	})
	switch output {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	case "yaml":
		b, err := yaml.Marshal(rep)
		if err != nil {
			return err
		}
		stdout.Write(b)
	default:
		printStatus(stdout, rep, output == "wide")
	}
	if len(rep.Unanswered) > 0 {
		names := make([]string, len(rep.Unanswered))
		for i, a := range rep.Unanswered {
			names[i] = a.Node
		}
		fmt.Fprintf(stderr, "kubectl-kubeshaper: %d node(s) did not answer: %s\n", len(names), strings.Join(names, ", "))
		return errFound
	}
	return nil
}

func printStatus(out io.Writer, rep report, wide bool) {
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	head := "NODE\tNAMESPACE\tPOD\tDIR\tRULE\tFROM\tMODE\tREQUESTED\tACHIEVED\tDROPS\tENFORCED"
	if wide {
		head += "\tVETH\tPACKETS\tBYTES\tINVALID"
	}
	fmt.Fprintln(tw, head)
	for _, p := range rep.Pods {
		for _, d := range p.Directions {
			req, ach := requestedAchieved(d)
			row := []string{p.Node, p.Namespace, p.Name, d.Direction, d.Rule, from(d.From), dash(d.Mode), req, ach, drops(d.Drops), enforcedString(p.Pod, d)}
			if wide {
				row = append(row, p.HostVeth, fmt.Sprint(d.Packets), fmt.Sprint(d.Bytes), fmt.Sprint(len(p.Invalid)))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
	}
	tw.Flush()
	var invalid []string
	for _, p := range rep.Pods {
		for _, iv := range p.Invalid {
			obj := "pod"
			if iv.Kind == "Service" {
				obj = "service " + iv.Name
			}
			invalid = append(invalid, fmt.Sprintf("  %s/%s (%s): %s", p.Namespace, p.Name, obj, iv.Message))
		}
	}
	if len(invalid) > 0 {
		fmt.Fprintln(out, "\nInvalid annotations (left out; the other keys apply):")
		for _, l := range invalid {
			fmt.Fprintln(out, l)
		}
	}
	if len(rep.Unanswered) > 0 {
		fmt.Fprintln(out, "\nNodes that did not answer (their pods are missing above):")
		for _, a := range rep.Unanswered {
			fmt.Fprintf(out, "  %s: %s\n", a.Node, a.Err)
		}
	}
}

// enforcedString is the direction's judgement (the pod's when the agent
// gives none per direction): "yes", "NO: reason", "-" unknown.
func enforcedString(p nodestatus.Pod, d nodestatus.Direction) string {
	e, reason := d.Enforced, d.Reason
	if e == nil {
		e, reason = p.Enforced, p.Reason
	}
	switch {
	case e == nil:
		return "-"
	case *e:
		return "yes"
	case reason != "":
		return "NO: " + reason
	}
	return "NO"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// from renders which object provides each rule: "bandwidth=Service/web,loss=Pod".
func from(m map[string]string) string { return pairs(m, func(v string) string { return v }) }

// drops renders packets dropped by reason: "bandwidth=12,loss=3".
func drops(m map[string]nodestatus.Drop) string {
	return pairs(m, func(d nodestatus.Drop) string { return strconv.FormatUint(d.Packets, 10) })
}

// pairs renders a map as "k=v,…" sorted by key, "-" when empty.
func pairs[V any](m map[string]V, val func(V) string) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+val(m[k]))
	}
	return strings.Join(parts, ",")
}

// requestedAchieved renders rate and loss asked for and achieved over the
// agent's window, as the node CLI does: "20mbit loss=1%", "19.7mbit loss=1.04%".
func requestedAchieved(d nodestatus.Direction) (req, ach string) {
	var r []string
	if d.RateBits > 0 {
		r = append(r, rules.FormatMeasured(float64(d.RateBits)))
	}
	if d.LossRatio > 0 {
		r = append(r, fmt.Sprintf("loss=%.4g%%", d.LossRatio*100))
	}
	req = dash(strings.Join(r, " "))
	if d.Achieved == nil {
		return req, "-"
	}
	a := []string{rules.FormatMeasured(d.Achieved.RateBits)}
	if l := d.Achieved.LossRatio; l != nil && !math.IsNaN(*l) && (d.LossRatio > 0 || *l > 0) {
		a = append(a, fmt.Sprintf("loss=%.4g%%", *l*100))
	}
	return req, strings.Join(a, " ")
}
