package rules

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseProgram(t *testing.T) {
	name63 := "a" + strings.Repeat("b", 62)
	var params32 []string
	var kv32 []string
	for i := range 32 {
		params32 = append(params32, fmt.Sprintf("P%d=%d", i, i))
		kv32 = append(kv32, fmt.Sprintf("P%d", i), fmt.Sprint(i))
	}
	val256 := strings.Repeat("v", 256)
	runValueCases(t, KeyProgram, []valueCase{
		{value: "dropper egress DROP=1 PORT=80", want: eg(prog("dropper", "DROP", "1", "PORT", "80"))},
		{value: "dropper egress PORT=80 DROP=1", want: eg(prog("dropper", "PORT", "80", "DROP", "1"))},
		{value: "egress dropper", want: eg(prog("dropper"))},
		{value: "dropper EGRESS drop = 1", want: eg(prog("dropper", "drop", "1"))},
		{value: "dropper both DROP=1", want: both(prog("dropper", "DROP", "1"))},
		{value: "ebpf-limit ingress RATE=1000 _x=y", want: ing(prog("ebpf-limit", "RATE", "1000", "_x", "y"))},
		{value: "my_prog2 egress V=-1 MAC=aa:bb:cc:dd:ee:ff H=0x1F", want: eg(prog("my_prog2", "V", "-1", "MAC", "aa:bb:cc:dd:ee:ff", "H", "0x1F"))},
		{value: "0 egress", want: eg(prog("0"))},
		{value: name63 + " egress", want: eg(prog(name63))},
		{value: "p egress " + strings.Join(params32, " "), want: eg(prog("p", kv32...))},
		{value: "p egress V=" + val256, want: eg(prog("p", "V", val256))},
		{value: "dropper egress DROP=1; limiter ingress RATE=5", want: Policy{prog("dropper", "DROP", "1").Program.dp(), prog("limiter", "RATE", "5").Program.dp()}},

		{value: "../etc egress", wantErr: "program name \"../etc\" is invalid"},
		{value: "a.b egress", wantErr: "no dots or slashes"},
		{value: "a/b egress", wantErr: "invalid"},
		{value: "Dropper egress", wantErr: "lowercase"},
		{value: "-x egress", wantErr: "invalid"},
		{value: "_x egress", wantErr: "invalid"},
		{value: name63 + "c egress", wantErr: "invalid"},
		{value: "dropper", wantErr: "no direction"},
		{value: "egress DROP=1", wantErr: "no program name"},
		{value: "a b egress", wantErr: "second program name \"b\""},
		{value: "dropper egress 1X=1", wantErr: "parameter name \"1X\" is invalid"},
		{value: "dropper egress X-Y=1", wantErr: "is invalid"},
		{value: "dropper egress DROP=", wantErr: `parameter "DROP" has no value`},
		{value: "dropper egress DROP=1 DROP=2", wantErr: "given twice"},
		{value: "p egress " + strings.Join(params32, " ") + " X=1", wantErr: "at most 32"},
		{value: "p egress V=" + val256 + "v", wantErr: "257 bytes: at most 256"},
		{value: "dropper egress X=a=b", wantErr: "'='"},
		{value: "dropper egress X=é", wantErr: "printable ASCII"},
		{value: "dropper egress; other egress", wantErr: "sets egress again"},
		{value: "dropper both; other ingress", wantErr: "sets ingress again"},
		{value: "dropper egress ingress", wantErr: "second direction"},
	})
}

// dp wraps a program as a direction policy, for table rows.
func (p *Program) dp() DirectionPolicy { return DirectionPolicy{Program: p} }

func TestProgramBothDoesNotShareParams(t *testing.T) {
	p, err := ParseValue(KeyProgram, "dropper both DROP=1")
	if err != nil {
		t.Fatal(err)
	}
	p[Egress].Program.Params[0].Value = "2"
	if p[Ingress].Program.Params[0].Value != "1" {
		t.Fatal("egress and ingress share one Params slice")
	}
}
