package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"sort"
	"text/tabwriter"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// ifaceStatus is one interface in `status --json`.
type ifaceStatus struct {
	Interface  string            `json:"interface"` // "" when the ifindex no longer exists
	Ifindex    int               `json:"ifindex"`
	Filters    []string          `json:"filters"` // "ingress:kubeshaper_pod_egress id 42"
	Directions []directionStatus `json:"directions"`
}

type directionStatus struct {
	Direction string                `json:"direction"`
	Rule      string                `json:"rule"`
	RateBits  uint64                `json:"rate_bits,omitempty"`
	LossRatio float64               `json:"loss_ratio,omitempty"`
	Packets   uint64                `json:"packets"`
	Bytes     uint64                `json:"bytes"`
	Drops     map[string]dropStatus `json:"drops"`
}

type dropStatus struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func status(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return badInput("status: %v", err)
	}
	dir, err := datapath.DefaultPinDir()
	if err != nil {
		return err
	}
	dp, err := datapath.Open(dir)
	if err != nil {
		return err
	}
	defer dp.Close()
	st, err := collect(dp)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printTable(out, st)
	return nil
}

func collect(dp *datapath.Datapath) ([]ifaceStatus, error) {
	keys, err := dp.Keys()
	if err != nil {
		return nil, err
	}
	byIndex := map[int]*ifaceStatus{}
	for _, k := range keys {
		idx := int(k.Ifindex)
		s := byIndex[idx]
		if s == nil {
			s = &ifaceStatus{Ifindex: idx, Filters: []string{}}
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
		}
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

func printTable(out io.Writer, st []ifaceStatus) {
	if len(st) == 0 {
		fmt.Fprintln(out, "no interfaces carry kubeshaper rules in this network namespace")
		return
	}
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "INTERFACE\tDIRECTION\tRULE\tPACKETS\tBYTES\tDROPS")
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
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", name, d.Direction, d.Rule, d.Packets, d.Bytes, drops)
		}
	}
	tw.Flush()
}
