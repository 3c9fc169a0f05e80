package flowexport

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// BenchmarkExportPass is one export pass (read, expire nothing, compare)
// over a map holding 10,000 flows of one interface: its cost per flow is
// what --flow-export costs the agent every --flow-export-interval.
//
//	go test -run - -bench ExportPass ./pkg/flowexport/
func BenchmarkExportPass(b *testing.B) {
	if os.Getuid() != 0 {
		b.Skip("needs root")
	}
	dp, err := datapath.Open(netlab.PinDir(b, "ksfe"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dp.Close() })
	cfg, err := datapath.ConfigFor(rules.DirectionPolicy{})
	if err != nil {
		b.Fatal(err)
	}
	cfg.EnableFlows()
	const lo = 1 // BPF_PROG_TEST_RUN runs on lo
	if err := dp.Set(datapath.KeyOf(lo, rules.Egress), cfg); err != nil {
		b.Fatal(err)
	}
	const flows = 10000
	pkt := udp(64)
	for i := range flows {
		binary.BigEndian.PutUint16(pkt[34:], uint16(10000+i)) // source port
		if _, err := dp.Program(rules.Egress).Run(&ebpf.RunOptions{Data: pkt}); err != nil {
			b.Fatal(err)
		}
	}
	e := New(dp, func() map[uint32]PodInfo { return map[uint32]PodInfo{lo: {Namespace: "ns", Pod: "p"}} }, io.Discard, Options{Idle: time.Hour})
	if err := e.Tick(); err != nil {
		b.Fatal(err)
	}
	if e.Active() < flows {
		b.Fatalf("%d flows in the map, want %d", e.Active(), flows)
	}
	b.Run("pass", func(b *testing.B) {
		for range b.N {
			if err := e.Tick(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/flows, "ns/flow")
	})
	// Its parts: listing the map, and the datapath's expiry (which lists
	// it too and reads the kernel clock for every record).
	b.Run("list", func(b *testing.B) {
		for range b.N {
			if _, err := dp.Flows(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/flows, "ns/flow")
	})
	b.Run("list-batch", func(b *testing.B) {
		for range b.N {
			fl, err := dp.FlowsBatch()
			if err != nil || len(fl) < flows {
				b.Fatal(len(fl), err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/flows, "ns/flow")
	})
	b.Run("expire", func(b *testing.B) {
		for range b.N {
			if _, err := dp.ExpireFlows(time.Hour, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/flows, "ns/flow")
	})
}

func udp(size int) []byte {
	p := make([]byte, size)
	binary.BigEndian.PutUint16(p[12:], 0x0800)
	ip := p[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	ip[8] = 64
	ip[9] = 17
	copy(ip[12:16], net.IPv4(10, 0, 0, 1).To4())
	copy(ip[16:20], net.IPv4(10, 0, 0, 2).To4())
	binary.BigEndian.PutUint16(ip[22:], 5201)
	binary.BigEndian.PutUint16(ip[24:], uint16(size-34))
	return p
}
