package main

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/kube"
	"github.com/kubeshaper/kubeshaper/pkg/sockpace"
)

// mapOptions sizes the BPF maps for this node: --max-pods, else the Node's
// allocatable pods (what the kubelet will run at most), else the
// kubelet's default. A node whose capacity grew gets its maps migrated,
// entry by entry, at the agent's next start (pkg/datapath, reconcilePin).
// Socket pacing's maps follow the same pod count (pkg/shaper passes the
// datapath's MaxPods to sockpace.Open, which replaces smaller pinned maps
// the same way and switches the pinned sock_ops link in place).
func mapOptions(o options, client *kube.Client, log *logrus.Entry) datapath.Options {
	opts := datapath.Options{
		FlowEntries: max(o.flowEntries, 0),
		Logf:        func(f string, a ...any) { log.Warnf(f, a...) },
	}
	pods, from := o.maxPods, "--max-pods"
	if pods == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		node, err := client.Node(ctx, o.nodeName)
		if err == nil {
			if q, ok := node.Status.Allocatable["pods"]; ok && q.Value() > 0 {
				pods, from = int(q.Value()), "the Node's allocatable pods"
			}
		} else {
			log.WithError(err).Warn("reading this Node's allocatable pods to size the maps: using the kubelet's default")
		}
	}
	if pods <= 0 {
		pods, from = datapath.DefaultMaxPods, "the kubelet's default max pods"
	}
	opts.Entries = datapath.EntriesForPods(pods)
	sp := sockpace.SizesForPods(opts.Entries / (2 * datapath.ChurnFactor)) // what the shaper passes (datapath MaxPods)
	log.WithFields(logrus.Fields{"pods": pods, "from": from, "entries": opts.Entries,
		"socket_pacing_entries": fmt.Sprintf("rules %d, netns %d, groups %d", sp.Rules, sp.Netns, sp.Groups)}).Info("BPF maps sized for this node")
	return opts
}
