package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
)

// loader opens the datapath sized for capacity pods and applies a rule
// (bandwidth both ways, loss on pod ingress, flows on) to each of the
// first pods veths named <prefix>h<i>, then reports the maps' memlock
// as one "MEMLOCK name bytes" line per map on stdout.
func loader(pins, prefix string, pods, capacity int) error {
	dp, err := openDatapath(pins, capacity)
	if err != nil {
		return err
	}
	defer dp.Close()
	sh := shaper.New(dp)
	pol := rules.Policy{}
	pol[rules.Egress] = rules.DirectionPolicy{Bandwidth: &rules.Bandwidth{RateBitsPerSec: 100e6, Mode: rules.ModeDrop}}
	pol[rules.Ingress] = rules.DirectionPolicy{Bandwidth: &rules.Bandwidth{RateBitsPerSec: 200e6, Mode: rules.ModeDrop},
		Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 1}}
	for i := 0; i < pods; i++ {
		name := fmt.Sprintf("%sh%d", prefix, i)
		l, err := net.InterfaceByName(name)
		if err != nil {
			return fmt.Errorf("pod %d: %w", i, err)
		}
		if err := sh.Apply(shaper.Interface{Name: name, Index: l.Index}, pol); err != nil {
			return fmt.Errorf("pod %d: %w", i, err)
		}
	}
	return reportMemlock()
}

// reportMemlock prints the memlock of every BPF map this process holds
// (fdinfo), named through the map's info.
func reportMemlock() error {
	fds, err := os.ReadDir("/proc/self/fdinfo")
	if err != nil {
		return err
	}
	seen := map[uint32]bool{}
	for _, f := range fds {
		b, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", f.Name()))
		if err != nil || !strings.Contains(string(b), "map_type:") {
			continue
		}
		var memlock int64
		var id uint32
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			v = strings.TrimSpace(v)
			switch k {
			case "memlock":
				memlock, _ = strconv.ParseInt(v, 10, 64)
			case "map_id":
				n, _ := strconv.ParseUint(v, 10, 32)
				id = uint32(n)
			}
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		name := fmt.Sprintf("id%d", id)
		if m, err := ebpf.NewMapFromID(ebpf.MapID(id)); err == nil {
			if info, err := m.Info(); err == nil && info.Name != "" {
				name = info.Name
			}
			m.Close()
		}
		fmt.Printf("MEMLOCK %s %d\n", name, memlock)
	}
	return nil
}
