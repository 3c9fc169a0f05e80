// Command kubeshaper is the node CLI: it applies kubeshaper rules to a host
// interface directly (useful without Kubernetes, for plain containers and
// for debugging) and shows what the datapath is doing on this node.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// mapOptions sizes the maps when this run creates them (--max-pods,
// --flow-entries).
var mapOptions datapath.Options

var usageFormat = `usage:
  kubeshaper [--bpffs DIR] [--max-pods N] [--flow-entries N] iface apply [--pod-side egress|ingress|both] <host-veth> KEY=VALUE...
  kubeshaper [--bpffs DIR] [--max-pods N] [--flow-entries N] iface apply --netns PATH --pod-iface NAME KEY=VALUE...
  kubeshaper [--bpffs DIR] iface clear <host-veth> | --netns PATH --pod-iface NAME
  kubeshaper [--bpffs DIR] status [--json] [--window 1s]
  kubeshaper [--bpffs DIR] flows [--pod NAMESPACE/NAME] [--json]

KEY is a rule's short name (%s); VALUE uses the annotation grammar,
directions named from the pod's point of view (egress = what the pod sends):
  kubeshaper iface apply veth1a2b bandwidth="100mbit egress" loss="uniform ingress 1%%"
apply is declarative: the interface ends up with exactly the rules given
(none given: counted only). Run it in the network namespace that holds the
host veth (e.g. ip netns exec node kubeshaper ...). Where deliveries skip
the host veth (an eBPF CNI's bpf_redirect_peer, a program ending the hook),
--pod-side runs the rule on the pod's own interface instead; naming the pod
end (--netns, --pod-iface) does so for both directions. Where another
tool's program is on a hook, kubeshaper runs first as a pinned tcx link.
status shows each pod's requested rule next to what it achieved over
--window (0: counters only), where it is attached, and whether it is
enforced (false, with the reason, when another program ends the hook first
or the traffic bypasses it); flows lists the per-flow records (5-tuple,
packets, bytes, drops, TCP flags, first/last seen), --json as JSON lines.
`

// usageError is bad input: exit code 2 and nothing changed.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func badInput(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kubeshaper", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	bpffs := fs.String("bpffs", "", "bpffs mount to pin maps under (default /sys/fs/bpf, or $KUBESHAPER_BPFFS)")
	maxPods := fs.Int("max-pods", 0, "size new maps for this many pods (default: the pinned maps' size, else 110); pinned maps of another size are migrated")
	flowEntries := fs.Int("flow-entries", 0, "bound of the per-flow map (default: the pinned map's, else 16384)")
	if err := fs.Parse(args); err != nil {
		return report(stderr, badInput("%v", err))
	}
	if *maxPods < 0 || *flowEntries < 0 {
		return report(stderr, badInput("--max-pods and --flow-entries must not be negative"))
	}
	mapOptions = datapath.Options{FlowEntries: *flowEntries, BPFFS: *bpffs}
	if *maxPods > 0 {
		mapOptions.Entries = datapath.EntriesForPods(*maxPods)
	}
	rest := fs.Args()
	var err error
	switch {
	case len(rest) >= 2 && rest[0] == "iface" && rest[1] == "apply":
		err = ifaceApply(rest[2:], stdout)
	case len(rest) >= 2 && rest[0] == "iface" && rest[1] == "clear":
		err = ifaceClear(rest[2:], stdout)
	case len(rest) >= 1 && rest[0] == "status":
		err = status(rest[1:], stdout)
	case len(rest) >= 1 && rest[0] == "flows":
		err = flows(rest[1:], stdout)
	case len(rest) == 1 && (rest[0] == "help" || rest[0] == "-h" || rest[0] == "--help"):
		fmt.Fprintf(stdout, usageFormat, strings.Join(rules.ShortNames(), ", "))
		return 0
	default:
		fmt.Fprintf(stderr, usageFormat, strings.Join(rules.ShortNames(), ", "))
		return 2
	}
	return report(stderr, err)
}

func report(stderr io.Writer, err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "kubeshaper: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}
