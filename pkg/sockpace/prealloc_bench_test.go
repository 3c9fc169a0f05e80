package sockpace

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
)

// What BPF_F_NO_PREALLOC costs the program. sock_ops programs cannot be
// test-run (the kernel has no BPF_PROG_TEST_RUN for them: Run returns an
// error, logged below), so the map operations of need() — create a group
// entry (BPF_NOEXIST), look one up — run in a test-runnable tc program on
// a map of ksp_groups' exact layout (BTF, bpf_spin_lock in the value),
// preallocated or not, beside the same program without the map operation.
// The program creates an entry once per paced address and direction (at
// its first flow), not per flow; the per-ACK path is the lookup.
//
//	make bench-sockpace-prealloc (flock /tmp/ks-bench.lock)

// groupsMap is a ksp_groups of n entries with the given flags.
func groupsMap(b *testing.B, flags uint32) *ebpf.Map {
	b.Helper()
	spec, err := loadSockpace()
	if err != nil {
		b.Fatal(err)
	}
	s := spec.Maps[sockpaceMapKspGroups].Copy()
	s.Pinning = ebpf.PinNone
	s.MaxEntries = uint32(SizesForPods(memNodePods).Groups)
	s.Flags = flags
	m, err := ebpf.NewMap(s)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// groupProg is a tc program that puts a random key on the stack (20 B at
// fp-24, a zero 48-B value at fp-72) and then, per op: nothing, creates
// and deletes the entry (insert), or looks up a key present (lookup).
func groupProg(b *testing.B, m *ebpf.Map, op string) *ebpf.Program {
	b.Helper()
	ins := asm.Instructions{asm.Mov.Imm(asm.R1, 0)}
	for off := int16(-72); off < 0; off += 8 {
		ins = append(ins, asm.StoreMem(asm.RFP, off, asm.R1, asm.DWord))
	}
	ins = append(ins,
		asm.FnGetPrandomU32.Call(),
		asm.StoreMem(asm.RFP, -24, asm.R0, asm.Word),
	)
	key := func() asm.Instructions {
		return asm.Instructions{asm.LoadMapPtr(asm.R1, m.FD()), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -24)}
	}
	switch op {
	case "insert":
		ins = append(ins, key()...)
		ins = append(ins, asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -72), asm.Mov.Imm(asm.R4, 1), // BPF_NOEXIST
			asm.FnMapUpdateElem.Call())
		ins = append(ins, key()...)
		ins = append(ins, asm.FnMapDeleteElem.Call())
	case "lookup":
		ins = append(ins, asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.RFP, -24, asm.R1, asm.Word)) // the key present
		ins = append(ins, key()...)
		ins = append(ins, asm.FnMapLookupElem.Call())
	}
	ins = append(ins, asm.Mov.Imm(asm.R0, 0), asm.Return())
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: ins})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

func BenchmarkGroupMap(b *testing.B) {
	if err := rlimit.RemoveMemlock(); err != nil {
		b.Fatal(err)
	}
	sockOpsTestRun(b)
	pkt := make([]byte, 64)
	for _, c := range []struct {
		name  string
		flags uint32
		op    string
	}{
		{"baseline", 0, "none"},
		{"insert-delete/prealloc", 0, "insert"},
		{"insert-delete/no-prealloc", bpfFNoPrealloc, "insert"},
		{"lookup/prealloc", 0, "lookup"},
		{"lookup/no-prealloc", bpfFNoPrealloc, "lookup"},
	} {
		b.Run(c.name, func(b *testing.B) {
			m := groupsMap(b, c.flags)
			if err := m.Put(sockpaceKspGroupKey{}, sockpaceKspGroup{}); err != nil {
				b.Fatal(err)
			}
			p := groupProg(b, m, c.op)
			b.ResetTimer()
			_, d, err := p.Benchmark(pkt, b.N, b.ResetTimer)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(d.Nanoseconds()), "ns/run")
		})
	}
}

// sockOpsTestRun logs what the kernel says to a test run of the
// sock_ops program.
func sockOpsTestRun(b *testing.B) {
	spec, err := loadSockpace()
	if err != nil {
		b.Fatal(err)
	}
	for _, ms := range spec.Maps {
		ms.Pinning = ebpf.PinNone
	}
	var objs sockpaceObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		b.Logf("loading the sock_ops program: %v", err)
		return
	}
	defer objs.Close()
	_, err = objs.KsSockpace.Run(&ebpf.RunOptions{Context: make([]byte, 256)})
	b.Logf("BPF_PROG_TEST_RUN of the sock_ops program: %v", err)
}
