package datapath

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// programDir is a program directory laid out as a ConfigMap mount: the
// files are symbolic links into a timestamped directory through ..data.
func programDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	ts := filepath.Join(dir, "..2026_11_22_10_00_00.1")
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ts, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func examples(t *testing.T) string {
	return programDir(t, map[string]string{
		"drop_port.o":      "../../bpf/examples/drop_port.o",
		"dscp.o":           "../../bpf/examples/dscp.o",
		"params.o":         "testdata/params.o",
		"bad_verifier.o":   "testdata/bad_verifier.o",
		"drop_all_nobtf.o": "testdata/drop_all_nobtf.o",
	})
}

func prog(name string, kv ...string) rules.Program {
	p := rules.Program{Name: name}
	for i := 0; i+1 < len(kv); i += 2 {
		p.Params = append(p.Params, rules.Param{Name: kv[i], Value: kv[i+1]})
	}
	return p
}

func loadCustomT(t *testing.T, dp *Datapath, dir string, p rules.Program, d rules.Direction) *ebpf.Program {
	t.Helper()
	pr, name, err := dp.LoadCustom(dir, p, d)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, "kubeshaper_prog_"+p.Name+"_") {
		t.Fatalf("filter name %q", name)
	}
	t.Cleanup(func() { pr.Close() })
	return pr
}

func runProg(t *testing.T, pr *ebpf.Program, pkt []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(pkt))
	ret, err := pr.Run(&ebpf.RunOptions{Data: pkt, DataOut: out, Context: skbCtx{}})
	if err != nil {
		t.Fatal(err)
	}
	return ret, out
}

func TestReadProgramFileChecks(t *testing.T) {
	dir := examples(t)
	if _, err := ReadProgramFile(dir, "drop_port"); err != nil {
		t.Fatalf("a ConfigMap-mounted program: %v", err)
	}
	outside := filepath.Join(t.TempDir(), "outside.o")
	if err := os.WriteFile(outside, []byte("\x7fELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Symlink(outside, filepath.Join(dir, "escape.o"))
	os.Symlink("../../../../../../etc/passwd", filepath.Join(dir, "passwd.o"))
	os.Mkdir(filepath.Join(dir, "adir.o"), 0o755)
	syscall.Mkfifo(filepath.Join(dir, "fifo.o"), 0o644)
	os.WriteFile(filepath.Join(dir, "text.o"), []byte("#!/bin/sh\necho hi\n"), 0o644)
	x86 := make([]byte, 64)
	copy(x86, "\x7fELF\x02\x01\x01")
	binary.LittleEndian.PutUint16(x86[18:], 62) // EM_X86_64
	os.WriteFile(filepath.Join(dir, "x86.o"), x86, 0o644)
	big, _ := os.Create(filepath.Join(dir, "big.o"))
	big.Truncate(MaxProgramSize + 1)
	big.Close()
	for _, tc := range []struct{ name, want string }{
		{"escape", "outside the program directory"},
		{"passwd", "outside the program directory"},
		{"adir", "not a regular file"},
		{"fifo", "not a regular file"},
		{"text", "not an ELF object"},
		{"x86", "not BPF"},
		{"big", "limit"},
		{"missing", "not in the program directory"},
		{"../drop_port", "not a plain name"},
		{"drop_port.o", "not a plain name"},
		{".hidden", "not a plain name"},
	} {
		_, err := ReadProgramFile(dir, tc.name)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := ReadProgramFile("", "drop_port"); !errors.Is(err, ErrNoProgramDir) {
		t.Errorf("no directory: %v", err)
	}
}

// TestCustomDropPort: the example drops by destination port, after
// kubeshaper's own program let the packet through, and its drops are
// counted under reason "program".
func TestCustomDropPort(t *testing.T) {
	dp := openTest(t)
	dir := examples(t)
	set(t, dp, rules.Egress, rules.DirectionPolicy{})
	pr := loadCustomT(t, dp, dir, prog("drop_port", "PORT", "5432", "PROTO", "17"), rules.Egress)
	for _, tc := range []struct {
		pkt  []byte
		drop bool
	}{
		{pkt(17, podV4, peerV4, 40000, 5432, 100), true},
		{pkt(17, podV6, peerV6, 40000, 5432, 100), true},
		{pkt(17, podV4, peerV4, 5432, 40000, 100), false}, // source port
		{pkt(6, podV4, peerV4, 40000, 5432, 100), false},  // TCP
		{pkt(17, podV4, peerV4, 40000, 5433, 100), false},
	} {
		if ret, _ := runProg(t, pr, tc.pkt); (ret == actShot) != tc.drop {
			t.Errorf("ret %d, want drop=%v", ret, tc.drop)
		}
	}
	c := counters(t, dp, rules.Egress)
	if c.DropPackets[ReasonProgram] != 2 || c.DropBytes[ReasonProgram] != uint64(len(pkt(17, podV4, peerV4, 1, 2, 100))+len(pkt(17, podV6, peerV6, 1, 2, 100))) {
		t.Errorf("program drops %d/%d bytes, want 2", c.DropPackets[ReasonProgram], c.DropBytes[ReasonProgram])
	}
	// Another direction's instance counts under its own key.
	set(t, dp, rules.Ingress, rules.DirectionPolicy{})
	in := loadCustomT(t, dp, dir, prog("drop_port", "PORT", "53"), rules.Ingress)
	runProg(t, in, pkt(17, peerV4, podV4, 40000, 53, 10))
	if c := counters(t, dp, rules.Ingress); c.DropPackets[ReasonProgram] != 1 {
		t.Errorf("ingress program drops %d, want 1", c.DropPackets[ReasonProgram])
	}
}

func TestCustomDSCP(t *testing.T) {
	dp := openTest(t)
	dir := examples(t)
	pr := loadCustomT(t, dp, dir, prog("dscp", "DSCP", "46"), rules.Egress)
	p4 := pkt(17, podV4, peerV4, 40000, 5432, 100)
	p4[15] = 0x01 // ECN ECT(1): kept
	binary.BigEndian.PutUint16(p4[24:], binary.BigEndian.Uint16(p4[24:])-1)
	ret, out := runProg(t, pr, p4)
	if ret != actUnspec || out[15] != 46<<2|0x01 {
		t.Fatalf("IPv4 TOS %#x (ret %d), want %#x", out[15], ret, 46<<2|1)
	}
	var sum uint32
	for i := 14; i < 34; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(out[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Errorf("IPv4 header checksum wrong after the rewrite (sum %#x)", sum)
	}
	_, out = runProg(t, pr, pkt(17, podV6, peerV6, 40000, 5432, 100))
	if tc := (binary.BigEndian.Uint16(out[14:]) >> 4) & 0xff; tc != 46<<2 {
		t.Errorf("IPv6 traffic class %#x, want %#x", tc, 46<<2)
	}
	// PORT limits it.
	pp := loadCustomT(t, dp, dir, prog("dscp", "DSCP", "10", "PORT", "443"), rules.Egress)
	if _, out := runProg(t, pp, pkt(17, podV4, peerV4, 40000, 5432, 100)); out[15] != 0 {
		t.Errorf("DSCP set on another port")
	}
	if _, out := runProg(t, pp, pkt(6, podV4, peerV4, 40000, 443, 100)); out[15] != 10<<2 {
		t.Errorf("DSCP %#x on port 443, want %#x", out[15], 10<<2)
	}
}

// TestCustomProgramParams: every supported type, KS_DIRECTION set by
// itself, and clear errors for the rest.
func TestCustomProgramParams(t *testing.T) {
	dp := openTest(t)
	dir := examples(t)
	set(t, dp, rules.Ingress, rules.DirectionPolicy{})
	good := prog("params", "U8", "200", "S16", "-300", "U32", "0xdeadbeef", "S64", "-5000000000", "FLAG", "true")
	pr := loadCustomT(t, dp, dir, good, rules.Ingress)
	if ret, _ := runProg(t, pr, udpPacket(64)); ret != actShot {
		t.Errorf("all parameters set: ret %d, want TC_ACT_SHOT", ret)
	}
	// Egress: KS_DIRECTION is 0, so the same parameters do not drop.
	eg := loadCustomT(t, dp, dir, good, rules.Egress)
	if ret, _ := runProg(t, eg, udpPacket(64)); ret != actUnspec {
		t.Errorf("egress instance: ret %d, want TC_ACT_UNSPEC", ret)
	}
	// The verdict a program returns is passed on as is.
	ok := loadCustomT(t, dp, dir, prog("params", "VERDICT", "0"), rules.Egress)
	if ret, _ := runProg(t, ok, udpPacket(64)); ret != 0 {
		t.Errorf("VERDICT=0 (TC_ACT_OK): ret %d", ret)
	}
	for _, tc := range []struct {
		p    rules.Program
		want string
	}{
		{prog("params", "NOPE", "1"), "unknown parameter NOPE"},
		{prog("params", "NOPE", "1"), "it declares FLAG, KS_DIRECTION, S16, S64, U32, U8, VERDICT"},
		{prog("params", "WRITABLE", "1"), "writable global"},
		{prog("params", "U8", "256"), "want an unsigned 8-bit integer"},
		{prog("params", "S16", "-40000"), "want a signed 16-bit integer"},
		{prog("params", "U32", "-1"), "want an unsigned 32-bit integer"},
		{prog("params", "FLAG", "maybe"), "want true, false, 1 or 0"},
		{prog("nosuch"), "not in the program directory"},
	} {
		_, _, err := dp.LoadCustom(dir, tc.p, rules.Egress)
		var pe *ProgramError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) || pe.Verifier {
			t.Errorf("%s: err %v, want a ProgramError containing %q", tc.p, err, tc.want)
		}
	}
}

func TestCustomProgramVerifierRejection(t *testing.T) {
	dp := openTest(t)
	_, _, err := dp.LoadCustom(examples(t), prog("bad_verifier"), rules.Egress)
	var pe *ProgramError
	if !errors.As(err, &pe) || !pe.Verifier {
		t.Fatalf("err %v, want a verifier ProgramError", err)
	}
	msg := err.Error()
	t.Logf("%s", msg)
	if !strings.Contains(msg, "verifier rejected") || !strings.Contains(msg, "invalid access to packet") || len(msg) > 800 {
		t.Errorf("message %q: want the verifier's reason, trimmed", msg)
	}
}

func TestCustomProgramWithoutBTF(t *testing.T) {
	dp := openTest(t)
	set(t, dp, rules.Egress, rules.DirectionPolicy{})
	pr := loadCustomT(t, dp, examples(t), prog("drop_all_nobtf"), rules.Egress)
	if ret, _ := runProg(t, pr, udpPacket(64)); ret != actShot {
		t.Errorf("ret %d, want TC_ACT_SHOT", ret)
	}
	if c := counters(t, dp, rules.Egress); c.DropPackets[ReasonProgram] != 1 {
		t.Errorf("program drops %d, want 1", c.DropPackets[ReasonProgram])
	}
	if _, _, err := dp.LoadCustom(examples(t), prog("drop_all_nobtf", "X", "1"), rules.Egress); err == nil || !strings.Contains(err.Error(), "declares none") {
		t.Errorf("a parameter for a program without globals: %v", err)
	}
}
