package flowexport

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
)

// fakeSource is a flow map with a clock the test moves (1 jiffy = 1 s).
type fakeSource struct {
	flows   map[datapath.FlowKey]datapath.FlowStats
	now     uint64 // jiffies
	expires int    // ExpireFlows calls
}

func (f *fakeSource) FlowsBatch() ([]datapath.Flow, error) {
	var out []datapath.Flow
	for k, v := range f.flows {
		out = append(out, datapath.Flow{Key: k, Stats: v})
	}
	return out, nil
}

func (f *fakeSource) ExpireFlows(idle time.Duration, gone map[uint32]bool) ([]datapath.Flow, error) {
	f.expires++
	var out []datapath.Flow
	for k, v := range f.flows {
		if gone[k.Ifindex] || time.Duration(f.now-v.LastJiffies)*time.Second >= idle {
			out = append(out, datapath.Flow{Key: k, Stats: v})
			delete(f.flows, k)
		}
	}
	return out, nil
}

func (f *fakeSource) FlowClock() (func(uint64) time.Time, error) {
	now := f.now
	base := time.Unix(1700000000, 0)
	return func(j uint64) time.Time { return base.Add(-time.Duration(now-j) * time.Second) }, nil
}

func key(ifindex uint32, sport uint16) datapath.FlowKey {
	k := datapath.FlowKey{Ifindex: ifindex, Dir: 0, Proto: 6, Family: 4, Sport: sport<<8 | sport>>8, Dport: 80 << 8}
	copy(k.Saddr[:], []byte{10, 0, 0, 1})
	copy(k.Daddr[:], []byte{10, 0, 0, 2})
	return k
}

func records(t *testing.T, b *bytes.Buffer) []Record {
	t.Helper()
	var out []Record
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var r Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%v: %q", err, line)
		}
		out = append(out, r)
	}
	b.Reset()
	return out
}

func TestExporterEnds(t *testing.T) {
	src := &fakeSource{flows: map[datapath.FlowKey]datapath.FlowStats{}, now: 100}
	pods := map[uint32]PodInfo{7: {"shop", "web-1", "web", "Deployment", "veth7"}, 9: {"shop", "db-0", "db", "StatefulSet", "veth9"}}
	var out bytes.Buffer
	e := New(src, func() map[uint32]PodInfo { return pods }, &out, Options{Idle: 30 * time.Second})

	src.flows[key(7, 1000)] = datapath.FlowStats{Packets: 10, Bytes: 5000, FirstJiffies: 90, LastJiffies: 95, TcpFlags: 0x12}
	src.flows[key(7, 1001)] = datapath.FlowStats{Packets: 1, Bytes: 60, FirstJiffies: 50, LastJiffies: 60, TcpFlags: 0x02}
	src.flows[key(9, 2000)] = datapath.FlowStats{Packets: 3, Bytes: 300, FirstJiffies: 99, LastJiffies: 99}
	if err := e.Tick(); err != nil {
		t.Fatal(err)
	}
	got := records(t, &out)
	if len(got) != 1 || got[0].End != EndIdle || got[0].SrcPort != 1001 || got[0].Pod != "web-1" || got[0].Workload != "web" ||
		got[0].WorkloadKind != "Deployment" || got[0].TCPFlags != "S" || got[0].Src != "10.0.0.1" || got[0].DstPort != 80 {
		t.Fatalf("first tick: %+v", got)
	}
	if d := got[0].LastSeen.Sub(got[0].FirstSeen); d != 10*time.Second {
		t.Errorf("first→last %v, want 10 s", d)
	}
	if e.Active() != 2 {
		t.Errorf("active %d, want 2", e.Active())
	}

	// db-0 is deleted: its flow goes out as pod_gone, labelled as before.
	// web-1's flow grows, then vanishes from the map (evicted from its set).
	delete(pods, 9)
	src.now = 105
	src.flows[key(7, 1000)] = datapath.FlowStats{Packets: 20, Bytes: 9000, FirstJiffies: 90, LastJiffies: 104, TcpFlags: 0x1a}
	if err := e.Tick(); err != nil {
		t.Fatal(err)
	}
	got = records(t, &out)
	if len(got) != 1 || got[0].End != EndPodGone || got[0].Pod != "db-0" || got[0].WorkloadKind != "StatefulSet" {
		t.Fatalf("second tick: %+v", got)
	}
	delete(src.flows, key(7, 1000))
	src.now = 110
	if err := e.Tick(); err != nil {
		t.Fatal(err)
	}
	got = records(t, &out)
	if len(got) != 1 || got[0].End != EndVanished || got[0].Packets != 20 || got[0].TCPFlags != "SPA" {
		t.Fatalf("third tick: %+v", got)
	}
	// Nothing due: the costly expiry is not called.
	if n := src.expires; n != 2 {
		t.Errorf("ExpireFlows called %d times in 3 ticks, want 2 (the third had nothing due)", n)
	}

	// Shutdown exports what is left, fresh or not.
	src.flows[key(7, 1002)] = datapath.FlowStats{Packets: 1, Bytes: 60, FirstJiffies: 110, LastJiffies: 110}
	if err := e.Flush(); err != nil {
		t.Fatal(err)
	}
	got = records(t, &out)
	if len(got) != 1 || got[0].End != EndShutdown || len(src.flows) != 0 {
		t.Fatalf("flush: %+v, left %d", got, len(src.flows))
	}
}

func TestTCPFlagLetters(t *testing.T) {
	for bits, want := range map[uint32]string{0: "", 0x02: "S", 0x12: "SA", 0x11: "FA", 0x1b: "FSPA", 0xff: "FSRPAUEC", 0x04: "R"} {
		if got := TCPFlagLetters(bits); got != want {
			t.Errorf("%#x: %q, want %q", bits, got, want)
		}
	}
}

// A pod's veth index reused by the next pod: the first pod's flows keep
// its name.
func TestExporterIfindexReused(t *testing.T) {
	src := &fakeSource{flows: map[datapath.FlowKey]datapath.FlowStats{}, now: 100}
	pods := map[uint32]PodInfo{9: {"shop", "db-0", "db", "StatefulSet", "veth9"}}
	var out bytes.Buffer
	e := New(src, func() map[uint32]PodInfo { return pods }, &out, Options{Idle: 30 * time.Second})
	src.flows[key(9, 2000)] = datapath.FlowStats{Packets: 3, Bytes: 300, FirstJiffies: 99, LastJiffies: 99}
	if err := e.Tick(); err != nil {
		t.Fatal(err)
	}
	delete(src.flows, key(9, 2000)) // cleared with db-0
	pods[9] = PodInfo{"shop", "db-1", "db", "StatefulSet", "veth9"}
	if err := e.Tick(); err != nil {
		t.Fatal(err)
	}
	got := records(t, &out)
	if len(got) != 1 || got[0].End != EndVanished || got[0].Pod != "db-0" {
		t.Fatalf("%+v", got)
	}
}
