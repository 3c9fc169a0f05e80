package main

import (
	"fmt"
	"math"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kubeshaper/kubeshaper/tools/bench/stats"
)

func lookPath(name string) (string, error) { return exec.LookPath(name) }

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseRate reads a rate in bits/s: "10M", "1G", "250mbit", "1500000".
func parseRate(s string) (uint64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "bit")
	t = strings.TrimSuffix(t, "bps")
	mult := 1.0
	switch {
	case strings.HasSuffix(t, "k"):
		mult, t = 1e3, t[:len(t)-1]
	case strings.HasSuffix(t, "m"):
		mult, t = 1e6, t[:len(t)-1]
	case strings.HasSuffix(t, "g"):
		mult, t = 1e9, t[:len(t)-1]
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) {
		return 0, fmt.Errorf("bad rate %q: want e.g. 10M, 1G, 250mbit", s)
	}
	return uint64(math.Round(v * mult)), nil
}

func parseRates(s string) ([]uint64, error) {
	var out []uint64
	for _, f := range splitList(s) {
		r, err := parseRate(f)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func parseFloats(s string) ([]float64, error) {
	var out []float64
	for _, f := range splitList(s) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func parseDirs(s string) ([]string, error) {
	var out []string
	for _, d := range splitList(s) {
		if d != "egress" && d != "ingress" {
			return nil, fmt.Errorf("bad direction %q (want egress, ingress)", d)
		}
		out = append(out, d)
	}
	return out, nil
}

// tcRate renders bits/s the way tc and kubeshaper's grammar read them.
func tcRate(bps uint64) string {
	switch {
	case bps%1e9 == 0:
		return fmt.Sprintf("%dgbit", bps/1e9)
	case bps%1e6 == 0:
		return fmt.Sprintf("%dmbit", bps/1e6)
	case bps%1e3 == 0:
		return fmt.Sprintf("%dkbit", bps/1e3)
	}
	return fmt.Sprintf("%dbit", bps)
}

// shortRate renders bits/s for tables: 10M, 1G, 2.5G.
func shortRate(bps uint64) string {
	switch {
	case bps >= 1e9:
		return strconv.FormatFloat(float64(bps)/1e9, 'g', 4, 64) + "G"
	case bps >= 1e6:
		return strconv.FormatFloat(float64(bps)/1e6, 'g', 4, 64) + "M"
	case bps >= 1e3:
		return strconv.FormatFloat(float64(bps)/1e3, 'g', 4, 64) + "k"
	}
	return strconv.FormatUint(bps, 10)
}

// modeSpec is one way of limiting a rate.
type modeSpec struct {
	Name   string        // as given: drop, tbf, pace, kernel-tbf, none, drop:burst=1M
	Kind   string        // drop, tbf, pace, kernel-tbf, none
	Burst  uint64        // explicit burst bytes (drop only), 0 = kubeshaper's default
	BurstT time.Duration // explicit burst as time at the rate
}

func parseMode(s string) (modeSpec, error) {
	m := modeSpec{Name: s}
	kind, opt, hasOpt := strings.Cut(s, ":")
	switch kind {
	case "drop", "tbf", "pace", "kernel-tbf", "none":
		m.Kind = kind
	default:
		return m, fmt.Errorf("unknown mode %q (want drop, tbf, pace, kernel-tbf, none, drop:burst=SIZE)", s)
	}
	if !hasOpt {
		return m, nil
	}
	v, ok := strings.CutPrefix(opt, "burst=")
	if !ok || kind != "drop" {
		return m, fmt.Errorf("bad mode %q: only drop takes an option, burst=SIZE", s)
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d <= 0 {
			return m, fmt.Errorf("bad burst in %q", s)
		}
		m.BurstT = d
		return m, nil
	}
	n, err := parseSize(v)
	if err != nil {
		return m, fmt.Errorf("bad burst in %q: %v", s, err)
	}
	m.Burst = n
	return m, nil
}

// parseSize reads bytes: 131072, 128k (KiB), 1M (MiB), 2.5MB (10^6).
func parseSize(s string) (uint64, error) {
	t := strings.ToLower(s)
	mult := 1.0
	for _, u := range []struct {
		suf string
		m   float64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"b", 1}} {
		if strings.HasSuffix(t, u.suf) {
			mult, t = u.m, strings.TrimSuffix(t, u.suf)
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return uint64(math.Round(v * mult)), nil
}

// burstFor is the explicit burst of a drop:burst= mode at a rate, 0 if none.
func (m modeSpec) burstFor(rate uint64) uint64 {
	if m.BurstT > 0 {
		return uint64(math.Round(float64(rate) / 8 * m.BurstT.Seconds()))
	}
	return m.Burst
}

func (m modeSpec) usesCLI() bool { return m.Kind == "drop" || m.Kind == "tbf" || m.Kind == "pace" }

// median, min and max of a non-empty slice.
func medMinMax(v []float64) (med, lo, hi float64) {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	if n%2 == 1 {
		med = s[n/2]
	} else {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}

// percentile by nearest rank (p in 0..100) of an unsorted slice.
func percentile(v []float64, p float64) float64 { return stats.Percentile(v, p) }
