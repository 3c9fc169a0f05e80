package datapath

import (
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// Per-packet cost of the program in the kernel (BPF_PROG_TEST_RUN; a
// trivial `return TC_ACT_OK` program measures ~31 ns here, most of it the
// test-run framework). Run with `make bench` or
// go test -run - -bench Prog ./pkg/datapath/
func benchProg(b *testing.B, p *rules.DirectionPolicy) {
	dp := openTest(b)
	if p != nil {
		set(b, dp, rules.Egress, *p)
	}
	pkt := udpPacket(64)
	b.ResetTimer()
	_, per, err := dp.Program(rules.Egress).Benchmark(pkt, b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(per.Nanoseconds()), "ns/pkt")
}

// A link far faster than the test can send, so every packet passes through
// the whole bucket path rather than the (cheaper) drop path.
var fastLink = &rules.Bandwidth{RateBitsPerSec: 100e9, Mode: rules.ModeDrop}

// BenchmarkProgTrivial is the floor: `return TC_ACT_UNSPEC`, measured in
// the same run, so that our cost can be quoted as a difference.
func BenchmarkProgTrivial(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer prog.Close()
	b.ResetTimer()
	_, per, err := prog.Benchmark(udpPacket(64), b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(per.Nanoseconds()), "ns/pkt")
}

func BenchmarkProgNotOurs(b *testing.B) { benchProg(b, nil) }

// openMonitoringFlows opens a test datapath whose loopback egress key
// counts only, with per-flow records: the flow benchmarks' common start.
func openMonitoringFlows(b *testing.B) *Datapath {
	dp := openTest(b)
	cfg, err := ConfigFor(rules.DirectionPolicy{})
	if err != nil {
		b.Fatal(err)
	}
	cfg.EnableFlows()
	if err := dp.Set(KeyOf(loIfindex, rules.Egress), cfg); err != nil {
		b.Fatal(err)
	}
	return dp
}

// BenchmarkProgMonitorFlows is BenchmarkProgMonitor with per-flow records
// (an existing flow: the steady state of a connection).
func BenchmarkProgMonitorFlows(b *testing.B) {
	dp := openMonitoringFlows(b)
	b.ResetTimer()
	_, per, err := dp.Program(rules.Egress).Benchmark(udpPacket(64), b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(per.Nanoseconds()), "ns/pkt")
}

// BenchmarkProgMonitorFlowsLastWay is BenchmarkProgMonitorFlows with the
// flow's set full and the flow in its last way: the most keys a packet of
// a known flow compares (bpf/lib/flows.h).
func BenchmarkProgMonitorFlowsLastWay(b *testing.B) {
	dp := openMonitoringFlows(b)
	ports := sameSet(dp.objs.KsFlows.MaxEntries()-1, flowWays)
	for _, p := range ports {
		if _, err := dp.Program(rules.Egress).Run(&ebpf.RunOptions{Data: udpFrom(p)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	_, per, err := dp.Program(rules.Egress).Benchmark(udpFrom(ports[flowWays-1]), b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(per.Nanoseconds()), "ns/pkt")
}

// BenchmarkProgMonitorFlowsFirstPacket is what a flow's first packet
// costs over a known flow's: the claim of a way under the set's spin lock
// (bpf/lib/flows.h). prog.Run repeats one packet, so only its first run
// would be a new flow: here every new flow is one run (repeat 1), followed
// by a second run of the same packet, and the kernel's own time of each
// (BPF_PROG_TEST_RUN's duration, no syscall in it; both include one clock
// read) is summed. It reports first − known (ns/first-packet, the cost of
// the claim) and the known runs' own mean. At most 16,384 flows whatever
// b.N (-benchtime 2000000x would be 4·10⁶ syscalls); the records are
// forgotten every 1,024 so that a claim finds a free way, never evicts.
func BenchmarkProgMonitorFlowsFirstPacket(b *testing.B) {
	dp := openMonitoringFlows(b)
	prog := dp.Program(rules.Egress)
	n := min(b.N, 1<<14)
	var first, known time.Duration
	b.ResetTimer()
	for i := range n {
		if i%1024 == 0 && i > 0 {
			if err := dp.ForgetFlows(loIfindex); err != nil {
				b.Fatal(err)
			}
		}
		pkt := udpFrom(uint16(1 + i))
		_, d1, err := prog.Benchmark(pkt, 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		_, d2, err := prog.Benchmark(pkt, 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		first, known = first+d1, known+d2
	}
	b.ReportMetric(float64((first-known).Nanoseconds())/float64(n), "ns/first-packet")
	b.ReportMetric(float64(known.Nanoseconds())/float64(n), "ns/known-run")
}

func BenchmarkProgMonitor(b *testing.B) { benchProg(b, &rules.DirectionPolicy{}) }
func BenchmarkProgBandwidth(b *testing.B) {
	benchProg(b, &rules.DirectionPolicy{Bandwidth: fastLink})
}
func BenchmarkProgLoss(b *testing.B) {
	benchProg(b, &rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 0.001}})
}
func BenchmarkProgAll(b *testing.B) {
	benchProg(b, &rules.DirectionPolicy{Bandwidth: fastLink, Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 0.001}})
}
func BenchmarkProgPace(b *testing.B) {
	benchProg(b, &rules.DirectionPolicy{Bandwidth: &rules.Bandwidth{RateBitsPerSec: 100e9, Mode: rules.ModePace}})
}

// Targeted rules: the packet (UDP to port 5201) matches the target, or
// misses it (only counted). Peers cost one LPM lookup on top.
func benchTargeted(b *testing.B, proto rules.Proto, peers []string, port uint16) {
	tg := mustTarget(b, proto, peers, []rules.PortRange{{Lo: port, Hi: port}}, nil)
	p := rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 0.001, Target: tg}}
	dp := openTest(b)
	setTargeted(b, dp, rules.Egress, p, nil)
	b.ResetTimer()
	_, per, err := dp.Program(rules.Egress).Benchmark(udpPacket(64), b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(per.Nanoseconds()), "ns/pkt")
}

func BenchmarkProgLossPortMatch(b *testing.B) { benchTargeted(b, rules.ProtoUDP, nil, 5201) }
func BenchmarkProgLossPortMiss(b *testing.B)  { benchTargeted(b, rules.ProtoUDP, nil, 5432) }
func BenchmarkProgLossPeerMatch(b *testing.B) {
	benchTargeted(b, rules.ProtoAny, []string{"10.0.0.0/8", "fd00::/8"}, 5201)
}
func BenchmarkProgGilbert(b *testing.B) {
	benchProg(b, &rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossGilbert, Gilbert: rules.Gilbert{P: 0.001, R: 99, H: 100, K: 100}}})
}

// BenchmarkProgMonitorParallel: the counted-only path on every CPU at
// once, all packets on one interface (a veth several CPUs send through):
// what sharing a counter between CPUs would cost.
func BenchmarkProgMonitorParallel(b *testing.B) {
	dp := openTest(b)
	set(b, dp, rules.Egress, rules.DirectionPolicy{})
	n := runtime.NumCPU()
	per := make([]time.Duration, n)
	var wg sync.WaitGroup
	b.ResetTimer()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, d, err := dp.Program(rules.Egress).Benchmark(udpPacket(64), b.N, nil)
			if err != nil {
				b.Error(err)
			}
			per[i] = d
		}(i)
	}
	wg.Wait()
	var sum time.Duration
	for _, d := range per {
		sum += d
	}
	b.ReportMetric(float64(sum.Nanoseconds())/float64(n), "ns/pkt")
}
