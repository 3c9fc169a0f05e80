package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/flowexport"
)

// flows lists the per-flow records of every pod interface (or one pod's),
// as a table or as JSON lines (one flowexport.Record per line).
func flows(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("flows", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	pod := fs.String("pod", "", "only this pod's flows (namespace/name, or name when unique)")
	asJSON := fs.Bool("json", false, "print one JSON object per flow")
	if err := fs.Parse(args); err != nil {
		return badInput("flows: %v", err)
	}
	if fs.NArg() > 0 {
		return badInput("flows: unexpected argument %q (use --pod namespace/name)", fs.Arg(0))
	}
	dp, err := datapath.OpenDefaultWith(mapOptions)
	if err != nil {
		return err
	}
	defer dp.Close()
	names, err := dp.PodNames()
	if err != nil {
		return err
	}
	var only map[uint32]bool
	if *pod != "" {
		only, err = podIfindexes(names, *pod)
		if err != nil {
			return err
		}
	}
	all, err := dp.FlowsBatch()
	if err != nil {
		return err
	}
	clock, err := dp.FlowClock()
	if err != nil {
		return err
	}
	recs := make([]flowexport.Record, 0, len(all))
	for _, f := range all {
		if only != nil && !only[f.Key.Ifindex] {
			continue
		}
		r := flowexport.NewRecord(f, clock)
		if n, ok := names[int(f.Key.Ifindex)]; ok {
			r.SetPod(n)
		}
		if ifi, err := net.InterfaceByIndex(int(f.Key.Ifindex)); err == nil {
			r.HostVeth = ifi.Name
		}
		recs = append(recs, r)
	}
	sort.Slice(recs, func(i, j int) bool {
		a, b := recs[i], recs[j]
		if a.Namespace+"/"+a.Pod != b.Namespace+"/"+b.Pod {
			return a.Namespace+"/"+a.Pod < b.Namespace+"/"+b.Pod
		}
		if a.Direction != b.Direction {
			return a.Direction < b.Direction
		}
		if a.Bytes != b.Bytes {
			return a.Bytes > b.Bytes
		}
		return a.SrcAddr()+a.DstAddr() < b.SrcAddr()+b.DstAddr()
	})
	if *asJSON {
		enc := json.NewEncoder(out)
		for _, r := range recs {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	printFlows(out, recs, time.Now())
	return nil
}

// podIfindexes finds the host interfaces the agent recorded for a pod.
func podIfindexes(names map[int]string, pod string) (map[uint32]bool, error) {
	out := map[uint32]bool{}
	matched := map[string]bool{}
	for idx, n := range names {
		_, name, _ := strings.Cut(n, "/")
		if n == pod || (!strings.Contains(pod, "/") && name == pod) {
			out[uint32(idx)] = true
			matched[n] = true
		}
	}
	if len(matched) > 1 {
		var m []string
		for n := range matched {
			m = append(m, n)
		}
		sort.Strings(m)
		return nil, badInput("flows: --pod %s is ambiguous (%s): give namespace/name", pod, strings.Join(m, ", "))
	}
	if len(out) == 0 {
		return nil, badInput("flows: no pod %q on this node (the agent records the pods it counts; see kubeshaper status)", pod)
	}
	return out, nil
}

func printFlows(out io.Writer, recs []flowexport.Record, now time.Time) {
	if len(recs) == 0 {
		fmt.Fprintln(out, "no flow records")
		return
	}
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tDIRECTION\tPROTO\tSRC\tDST\tPACKETS\tBYTES\tDROPS\tFLAGS\tFIRST\tLAST")
	for _, r := range recs {
		pod := r.Namespace + "/" + r.Pod
		if r.Pod == "" {
			pod = fmt.Sprintf("(ifindex %d)", r.Ifindex)
		}
		flags := r.TCPFlags
		if flags == "" {
			flags = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", pod, r.Direction, r.Proto, r.SrcAddr(), r.DstAddr(),
			r.Packets, r.Bytes, r.Drops, flags, ago(now, r.FirstSeen), ago(now, r.LastSeen))
	}
	tw.Flush()
}

// ago renders a time as "12s ago" (to the second: flows are stamped in
// kernel ticks).
func ago(now, t time.Time) string {
	d := now.Sub(t).Round(time.Second)
	if d < time.Second {
		return "now"
	}
	return d.String() + " ago"
}
