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

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
	"github.com/kubeshaper/kubeshaper/pkg/sockpace"
)

// shortMode is the table's form: up to the first parenthesis for
// paced rules, in full otherwise (the reason is the point).
func shortMode(e string) string {
	if strings.HasPrefix(e, "policer + socket pacing") {
		return "policer + socket pacing"
	}
	return e
}

// ifaceStatus is one interface in `status --json`.
type ifaceStatus struct {
	Pod       string   `json:"pod,omitempty"` // namespace/name, as the agent recorded it
	Interface string   `json:"interface"`     // "" when the ifindex no longer exists
	Ifindex   int      `json:"ifindex"`
	Filters   []string `json:"filters"` // "ingress:kubeshaper_pod_egress id 42"
	// Attachments names, per direction, the hook that enforces it and what
	// of ours runs there: "host ingress: tcx link 12 (prog 40)".
	Attachments []string `json:"attachments"`
	// Programs names the custom programs (kubeshaper.io/program) and
	// where they run: "egress host ingress: tcx link 13 (prog 41), right
	// behind ours".
	Programs   []string          `json:"programs,omitempty"`
	Directions []directionStatus `json:"directions"`

	ifc shaper.Interface
}

type directionStatus struct {
	Direction string                `json:"direction"`
	Rule      string                `json:"rule"`
	RateBits  uint64                `json:"rate_bits,omitempty"`
	LossRatio float64               `json:"loss_ratio,omitempty"`
	Packets   uint64                `json:"packets"`
	Bytes     uint64                `json:"bytes"`
	Drops     map[string]dropStatus `json:"drops"`
	// CausedRetransmissions: bandwidth drops of TCP segments carrying data
	// since the rule was applied.
	CausedRetransmissions uint64 `json:"caused_retransmissions"`
	// Mode says how a rate limit is enforced, and why: the policer with
	// or without socket pacing (issue 13), tbf, EDT.
	Mode string `json:"mode,omitempty"`
	// Achieved is what passed over the --window the command sampled.
	Achieved *achievedStatus `json:"achieved,omitempty"`
	// Whether the rule is really in force (enforced, reason, attachment,
	// foreign, bypassed): judged from where our program runs and, over
	// --window, from the pod interface's counters against ours.
	shaper.Enforcement

	dir      rules.Direction
	counters datapath.Counters
}

// achievedStatus is the achieved side of "requested vs achieved".
type achievedStatus struct {
	WindowSeconds float64 `json:"window_seconds"`
	Packets       uint64  `json:"packets"`
	// RateBits: wire bits per second that passed (seen minus dropped).
	RateBits float64 `json:"rate_bits"`
	// LossRatio: injected-loss drops / packets seen; absent without packets.
	LossRatio *float64 `json:"loss_ratio,omitempty"`
	// RetransRatio: bandwidth drops of TCP data (retransmissions the
	// policer caused) / packets seen; absent without packets.
	RetransRatio *float64 `json:"retransmission_ratio,omitempty"`
}

type dropStatus struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func status(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "print JSON")
	window := fs.Duration("window", time.Second, "sample the counters twice this far apart to show the achieved rate and loss (0: don't)")
	if err := fs.Parse(args); err != nil {
		return badInput("status: %v", err)
	}
	dp, err := datapath.OpenDefaultWith(mapOptions)
	if err != nil {
		return err
	}
	defer dp.Close()
	sh := shaper.New(dp)
	ifcs, err := interfaces(dp)
	if err != nil {
		return err
	}
	var before map[datapath.Key]datapath.Counters
	var start time.Time
	traffic := map[int]*shaper.Traffic{}
	if *window > 0 {
		if before, err = readAll(dp); err != nil {
			return err
		}
		for idx, ifc := range ifcs {
			t := sh.ReadTraffic(ifc)
			traffic[idx] = &t
		}
		start = time.Now()
		time.Sleep(*window)
	}
	st, err := collect(dp)
	if err != nil {
		return err
	}
	for i := range st {
		ifc, ok := ifcs[st[i].Ifindex]
		if !ok || st[i].Interface == "" {
			continue
		}
		pl := sh.Placements(ifc)
		var after *shaper.Traffic
		if prev := traffic[ifc.Index]; prev != nil {
			t := sh.ReadTraffic(ifc)
			after = &t
		}
		enf := shaper.Judge(pl, traffic[ifc.Index], after)
		for _, p := range pl {
			st[i].Attachments = append(st[i].Attachments, fmt.Sprintf("%s %s", p.Direction, p))
		}
		for d, p := range sh.ProgramAttachments(ifc) {
			if p != "" {
				st[i].Programs = append(st[i].Programs, fmt.Sprintf("%s %s", rules.Direction(d), p))
			}
		}
		for j := range st[i].Directions {
			d := &st[i].Directions[j]
			d.Enforcement = enf[d.dir]
		}
	}
	if before != nil {
		span := time.Since(start)
		for i := range st {
			for j := range st[i].Directions {
				d := &st[i].Directions[j]
				prev, ok := before[datapath.KeyOf(st[i].Ifindex, d.dir)]
				if !ok {
					continue
				}
				if a, ok := datapath.AchievedBetween(prev, d.counters, span); ok {
					d.Achieved = &achievedStatus{WindowSeconds: span.Seconds(), Packets: a.Packets, RateBits: a.RateBits}
					if a.Packets > 0 {
						l, r := a.LossRatio, a.RetransRatio
						d.Achieved.LossRatio = &l
						d.Achieved.RetransRatio = &r
					}
				}
			}
		}
	}
	names, err := dp.PodNames()
	if err != nil {
		return err
	}
	for i := range st {
		st[i].Pod = names[st[i].Ifindex]
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printTable(out, st)
	return nil
}

// readAll reads every key's counters.
func readAll(dp *datapath.Datapath) (map[datapath.Key]datapath.Counters, error) {
	keys, err := dp.Keys()
	if err != nil {
		return nil, err
	}
	out := make(map[datapath.Key]datapath.Counters, len(keys))
	for _, k := range keys {
		c, ok, err := dp.Counters(k)
		if err != nil {
			return nil, err
		}
		if ok {
			out[k] = c
		}
	}
	return out, nil
}

// interfaces finds, for every interface with kubeshaper state that still
// exists, its pod end (where known).
func interfaces(dp *datapath.Datapath) (map[int]shaper.Interface, error) {
	keys, err := dp.Keys()
	if err != nil {
		return nil, err
	}
	out := map[int]shaper.Interface{}
	for _, k := range keys {
		idx := int(k.Ifindex)
		if _, done := out[idx]; done {
			continue
		}
		ifi, err := net.InterfaceByIndex(idx)
		if err != nil {
			continue
		}
		ifc := shaper.Interface{Name: ifi.Name, Index: idx}
		if pod, err := podnet.PodEnd(ifi.Name); err == nil {
			ifc.Pod = pod
		}
		out[idx] = ifc
	}
	return out, nil
}

func collect(dp *datapath.Datapath) ([]ifaceStatus, error) {
	keys, err := dp.Keys()
	if err != nil {
		return nil, err
	}
	paced, pacedErr := sockpace.Read(dp.PinDir())
	byIndex := map[int]*ifaceStatus{}
	for _, k := range keys {
		idx := int(k.Ifindex)
		s := byIndex[idx]
		if s == nil {
			s = &ifaceStatus{Ifindex: idx, Filters: []string{}, Attachments: []string{}}
			if ifi, err := net.InterfaceByIndex(idx); err == nil {
				s.Interface = ifi.Name
				fl, err := attach.ListFilters(idx)
				if err != nil {
					return nil, err
				}
				for _, f := range fl {
					s.Filters = append(s.Filters, fmt.Sprintf("%s:%s id %d", f.Hook, f.Name, f.ProgID))
				}
			}
			byIndex[idx] = s
		}
		cfg, _, err := dp.Lookup(k)
		if err != nil {
			return nil, err
		}
		c, _, err := dp.Counters(k)
		if err != nil {
			return nil, err
		}
		ds := directionStatus{
			Direction: rules.Direction(k.Dir).String(),
			Rule:      cfg.String(),
			RateBits:  cfg.RateBits(),
			LossRatio: cfg.LossProbability(),
			Packets:   c.Packets,
			Bytes:     c.Bytes,
			Drops:     map[string]dropStatus{},
			dir:       rules.Direction(k.Dir),
			counters:  c,
		}
		ds.CausedRetransmissions = c.TcpDataBwDrops
		ds.Mode = modeOf(cfg, paced, pacedErr, idx, rules.Direction(k.Dir))
		for i, name := range datapath.ReasonNames {
			if c.DropPackets[i] > 0 {
				ds.Drops[name] = dropStatus{Packets: c.DropPackets[i], Bytes: c.DropBytes[i]}
			}
		}
		s.Directions = append(s.Directions, ds)
	}
	out := make([]ifaceStatus, 0, len(byIndex))
	for _, s := range byIndex {
		sort.Slice(s.Directions, func(i, j int) bool { return s.Directions[i].Direction < s.Directions[j].Direction })
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ifindex < out[j].Ifindex })
	return out, nil
}

// modeOf explains how cfg's rate limit is enforced on ifindex, and why.
func modeOf(cfg datapath.Config, paced sockpace.State, readErr error, ifindex int, d rules.Direction) string {
	switch {
	case cfg.UsesTBF():
		return "kernel tbf qdisc (mode=tbf: a queue)"
	case cfg.NeedsFQ() && cfg.RateBits() > 0:
		return "EDT pacing + fq (mode=pace)"
	case cfg.RateBits() == 0:
		return ""
	}
	for _, e := range paced.Of(ifindex) {
		if (d == rules.Egress && e.Rule.EgressBitsPerSec > 0) || (d == rules.Ingress && e.Rule.IngressBitsPerSec > 0) {
			who := "the pod's TCP sockets paced"
			if d == rules.Ingress {
				who = "same-node TCP senders paced"
			}
			return "policer + socket pacing (" + who + "; the policer caps UDP, off-node senders, sockets that reset pacing)"
		}
	}
	switch {
	case readErr != nil:
		return "policer only (socket pacing state unreadable: " + readErr.Error() + ")"
	case !paced.Attached:
		return "policer only (socket pacing not attached: it needs cgroup v2 and Linux >= 5.15)"
	case cfg.Targeted():
		return "policer only (a targeted rule: to=/port=/proto= cannot be a socket rate)"
	}
	return "policer only (pacing=off, or the pod's address is unknown)"
}

func printTable(out io.Writer, st []ifaceStatus) {
	if len(st) == 0 {
		fmt.Fprintln(out, "no interfaces carry kubeshaper rules in this network namespace")
		return
	}
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tINTERFACE\tDIRECTION\tRULE\tREQUESTED\tACHIEVED\tPACKETS\tBYTES\tDROPS\tATTACHED\tENFORCED")
	for _, s := range st {
		name := s.Interface
		if name == "" {
			name = fmt.Sprintf("(gone, ifindex %d)", s.Ifindex)
		}
		for _, d := range s.Directions {
			drops := "-"
			if len(d.Drops) > 0 {
				drops = ""
				names := make([]string, 0, len(d.Drops))
				for n := range d.Drops {
					names = append(names, n)
				}
				sort.Strings(names)
				for _, n := range names {
					drops += fmt.Sprintf("%s=%d ", n, d.Drops[n].Packets)
				}
			}
			pod := s.Pod
			if pod == "" {
				pod = "-"
			}
			req, ach := requestedAchieved(d)
			att, enf := d.Attachment, "yes"
			if att == "" {
				att = "-"
			}
			if !d.Enforced {
				enf = "NO: " + d.Reason
			}
			rule := d.Rule
			if d.Mode != "" {
				rule += " [" + shortMode(d.Mode) + "]"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", pod, name, d.Direction, rule, req, ach, d.Packets, d.Bytes, drops, att, enf)
		}
	}
	tw.Flush()
}

// requestedAchieved renders the rate and loss asked for and achieved, e.g.
// "20mbit loss=1%" and "19.7mbit loss=1.04%".
func requestedAchieved(d directionStatus) (req, ach string) {
	var r []string
	if d.RateBits > 0 {
		r = append(r, rules.FormatMeasured(float64(d.RateBits)))
	}
	if d.LossRatio > 0 {
		r = append(r, fmt.Sprintf("loss=%.4g%%", d.LossRatio*100))
	}
	req = strings.Join(r, " ")
	if req == "" {
		req = "-"
	}
	if d.Achieved == nil {
		return req, "-"
	}
	a := []string{rules.FormatMeasured(d.Achieved.RateBits)}
	if l := d.Achieved.LossRatio; l != nil && (d.LossRatio > 0 || *l > 0) {
		a = append(a, fmt.Sprintf("loss=%.4g%%", *l*100))
	}
	if r := d.Achieved.RetransRatio; r != nil && d.RateBits > 0 {
		a = append(a, fmt.Sprintf("retx=%.3g%%", *r*100))
	}
	return req, strings.Join(a, " ")
}
