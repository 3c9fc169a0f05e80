package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// Custom programs (kubeshaper.io/program): an admin's object file from the
// program directory, its volatile const globals set from the annotation's
// NAME=value, run inside kubeshaper's wrapper (bpf/custom.c) so that its
// drops are counted under reason "program". One instance per {interface,
// direction}; the filter holds it, nothing is pinned.

// DirectionParam is the volatile const a custom program may declare to
// learn its direction (0 egress, 1 ingress): what the ELTE prototype's custom programs got as their INTERFACE macro.
const DirectionParam = "KS_DIRECTION"

// placeholder is the wrapper's function the custom program replaces.
const placeholder = "ks_custom_main"

// ProgramError is a custom program that could not be loaded. The pod's
// other rules are not affected.
type ProgramError struct {
	Program   string
	Direction rules.Direction
	// Verifier is set when the kernel's verifier rejected the program.
	Verifier bool
	Err      error
}

func (e *ProgramError) Error() string {
	return fmt.Sprintf("custom program %s %s: %v", e.Program, e.Direction, e.Err)
}

func (e *ProgramError) Unwrap() error { return e.Err }

// CustomFilterName is the tc filter name of a custom program as a rule
// asks for it now: it changes with the object file's content and the
// parameters, so a changed ConfigMap is loaded again.
func CustomFilterName(dir string, p rules.Program, d rules.Direction) (string, error) {
	data, err := ReadProgramFile(dir, p.Name)
	if err != nil {
		return "", &ProgramError{Program: p.Name, Direction: d, Err: err}
	}
	return customFilterName(p, data), nil
}

func customFilterName(p rules.Program, data []byte) string {
	return "kubeshaper_prog_" + p.Name + "_" + programDigest(data, p.String())
}

// LoadCustom loads the custom program p names for direction d of the host
// interface the caller attaches it to, and returns it with its filter
// name. The caller attaches it (attach.AttachProgramFilter) and closes its
// handle. Errors are *ProgramError.
func (d *Datapath) LoadCustom(dir string, p rules.Program, dirn rules.Direction) (*ebpf.Program, string, error) {
	fail := func(verifier bool, err error) (*ebpf.Program, string, error) {
		return nil, "", &ProgramError{Program: p.Name, Direction: dirn, Verifier: verifier, Err: err}
	}
	data, err := ReadProgramFile(dir, p.Name)
	if err != nil {
		return fail(false, err)
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(data))
	if err != nil {
		return fail(false, fmt.Errorf("reading the object: %w", err))
	}
	prog, err := theTCProgram(spec)
	if err != nil {
		return fail(false, err)
	}
	if err := setParams(spec, p, dirn); err != nil {
		return fail(false, err)
	}
	cs, progName, err := wrap(spec, prog, dirn)
	if err != nil {
		return fail(false, err)
	}
	repl := map[string]*ebpf.Map{
		customMapKsStats:    d.objs.KsStats,
		customMapKsPcpu:     d.objs.KsPcpu,
		customMapKsSlots:    d.objs.KsSlots,
		customMapKsSlotHash: d.objs.KsSlotHash,
	}
	fitReplacements(cs, repl)
	coll, err := ebpf.NewCollectionWithOptions(cs, ebpf.CollectionOptions{MapReplacements: repl})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fail(true, fmt.Errorf("the kernel's verifier rejected it: %s", trimVerifierLog(ve)))
		}
		return fail(false, fmt.Errorf("loading: %w", err))
	}
	defer coll.Close()
	out := coll.DetachProgram(progName)
	return out, customFilterName(p, data), nil
}

// theTCProgram picks the object's one program for tc (cls_bpf).
func theTCProgram(spec *ebpf.CollectionSpec) (*ebpf.ProgramSpec, error) {
	var tcProgs []*ebpf.ProgramSpec
	var names []string
	for _, ps := range spec.Programs {
		if ps.Type == ebpf.SchedCLS {
			tcProgs = append(tcProgs, ps)
			names = append(names, ps.Name)
		}
	}
	sort.Strings(names)
	switch len(tcProgs) {
	case 0:
		return nil, errors.New(`the object has no tc program: want one function in SEC("tc")`)
	case 1:
		return tcProgs[0], nil
	}
	return nil, fmt.Errorf(`the object has %d tc programs (%s): want one function in SEC("tc")`, len(tcProgs), strings.Join(names, ", "))
}

// setParams sets the program's volatile const globals from the rule's
// NAME=value, and KS_DIRECTION unless the rule sets it.
func setParams(spec *ebpf.CollectionSpec, p rules.Program, dirn rules.Direction) error {
	var consts []string
	for name, v := range spec.Variables {
		if v.Constant() {
			consts = append(consts, name)
		}
	}
	sort.Strings(consts)
	known := "it declares none"
	if len(consts) > 0 {
		known = "it declares " + strings.Join(consts, ", ")
	}
	given := map[string]bool{}
	for _, prm := range p.Params {
		given[prm.Name] = true
		v, ok := spec.Variables[prm.Name]
		if !ok {
			return fmt.Errorf("unknown parameter %s: the program has no volatile const global of that name (%s)", prm.Name, known)
		}
		if !v.Constant() {
			return fmt.Errorf("parameter %s is a writable global (section %s), not a volatile const: it cannot be set at load time", prm.Name, v.SectionName)
		}
		if err := setVariable(v, prm.Value); err != nil {
			return fmt.Errorf("parameter %s=%s: %w", prm.Name, prm.Value, err)
		}
	}
	if v, ok := spec.Variables[DirectionParam]; ok && v.Constant() && !given[DirectionParam] {
		if err := setVariable(v, strconv.Itoa(int(dirn))); err != nil {
			return fmt.Errorf("%s: %w", DirectionParam, err)
		}
	}
	return nil
}

// setVariable parses value for the variable's C type: integers (decimal,
// 0x hex, 0o octal, 0b binary; in range of the type), bool (true, false,
// 1, 0), enums by number, and char arrays (a string shorter than the
// array).
func setVariable(v *ebpf.VariableSpec, value string) error {
	if v.Type == nil {
		return errors.New("the object has no type information for it (compile with clang -g)")
	}
	typ := btf.UnderlyingType(v.Type.Type)
	switch t := typ.(type) {
	case *btf.Int:
		if t.Encoding == btf.Bool {
			var b uint8
			switch strings.ToLower(value) {
			case "1", "true":
				b = 1
			case "0", "false":
			default:
				return errors.New("want true, false, 1 or 0 (a bool)")
			}
			return setSized(v, uint64(b), t.Size)
		}
		return setInt(v, value, t.Size, t.Encoding == btf.Signed)
	case *btf.Enum:
		return setInt(v, value, t.Size, t.Signed)
	case *btf.Array:
		elem, ok := btf.UnderlyingType(t.Type).(*btf.Int)
		if !ok || elem.Size != 1 {
			break
		}
		if len(value) >= int(t.Nelems) {
			return fmt.Errorf("%d characters do not fit char[%d] (with its NUL)", len(value), t.Nelems)
		}
		b := make([]byte, t.Nelems)
		copy(b, value)
		return v.Set(b)
	}
	return fmt.Errorf("its type %s cannot be set from an annotation: want an integer, bool, enum or char array", typ.TypeName())
}

func setInt(v *ebpf.VariableSpec, value string, size uint32, signed bool) error {
	if signed {
		n, err := strconv.ParseInt(value, 0, int(size*8))
		if err != nil {
			return fmt.Errorf("want a signed %d-bit integer", size*8)
		}
		return setSized(v, uint64(n), size)
	}
	n, err := strconv.ParseUint(value, 0, int(size*8))
	if err != nil {
		return fmt.Errorf("want an unsigned %d-bit integer", size*8)
	}
	return setSized(v, n, size)
}

func setSized(v *ebpf.VariableSpec, n uint64, size uint32) error {
	switch size {
	case 1:
		return v.Set(uint8(n))
	case 2:
		return v.Set(uint16(n))
	case 4:
		return v.Set(uint32(n))
	case 8:
		return v.Set(n)
	}
	return fmt.Errorf("unsupported integer size %d", size)
}

// wrap builds the collection to load: the wrapper program for the
// direction with its placeholder replaced by the custom program's
// instructions (its subprograms follow), the custom program's maps and
// globals, and the wrapper's counter map (replaced by the pinned one).
func wrap(spec *ebpf.CollectionSpec, prog *ebpf.ProgramSpec, dirn rules.Direction) (*ebpf.CollectionSpec, string, error) {
	ws, err := loadCustom()
	if err != nil {
		return nil, "", fmt.Errorf("kubeshaper's wrapper: %w", err)
	}
	for name := range ws.Maps {
		if _, ok := spec.Maps[name]; ok {
			return nil, "", fmt.Errorf("the object defines a map named %s, which kubeshaper reserves", name)
		}
	}
	wname := customProgKsCustomEgress
	if dirn == rules.Ingress {
		wname = customProgKsCustomIngress
	}
	winsns := ws.Programs[wname].Instructions
	cut := slices.IndexFunc(winsns, func(ins asm.Instruction) bool { return ins.Symbol() == placeholder })
	if cut < 0 {
		return nil, "", errors.New("kubeshaper's wrapper has no placeholder (build error)")
	}
	for _, ins := range winsns[cut+1:] {
		if ins.Symbol() != "" {
			return nil, "", errors.New("kubeshaper's wrapper has code after its placeholder (build error)")
		}
	}
	body := slices.Clone(prog.Instructions)
	for _, ins := range body {
		if sym := ins.Symbol(); sym == placeholder || sym == wname {
			return nil, "", fmt.Errorf("the object has a function named %s, which kubeshaper reserves", sym)
		}
	}
	body[0] = body[0].WithSymbol(placeholder)
	insns := append(slices.Clone(winsns[:cut]), body...)
	if btf.FuncMetadata(&body[0]) == nil {
		// Without BTF in the custom object, func info must go from all
		// functions: the kernel wants it for each or for none.
		for i := range insns {
			insns[i] = btf.WithFuncMetadata(insns[i], nil).WithSource(nil)
		}
	}
	maps := make(map[string]*ebpf.MapSpec, len(spec.Maps)+1)
	for name, m := range spec.Maps {
		m = m.Copy()
		m.Pinning = ebpf.PinNone // an instance's own, never shared
		maps[name] = m
	}
	for name, m := range ws.Maps {
		if name != ".bss" && name != ".data" && name != ".rodata" {
			maps[name] = m
		}
	}
	out := &ebpf.CollectionSpec{
		Maps: maps,
		Programs: map[string]*ebpf.ProgramSpec{prog.Name: {
			Name:         prog.Name,
			Type:         ebpf.SchedCLS,
			SectionName:  prog.SectionName,
			Instructions: insns,
			License:      prog.License,
			ByteOrder:    prog.ByteOrder,
		}},
		Variables: spec.Variables,
		Types:     spec.Types,
		ByteOrder: spec.ByteOrder,
	}
	return out, prog.Name, nil
}

// trimVerifierLog keeps the verifier's conclusion and the instructions
// that lead to it: an Event has room for a message, not for the whole
// log. The reason comes first, then up to three instructions before it,
// e.g. "invalid access to packet, off=100 size=1 … (at 43: (0f) r1 += r2
// | 44: (71) r1 = *(u8 *)(r1 +0))".
func trimVerifierLog(ve *ebpf.VerifierError) string {
	const maxLen = 600
	var lines []string
	for _, l := range ve.Log {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "processed ") || strings.HasPrefix(l, "verification time") || strings.HasPrefix(l, "stack depth") {
			continue
		}
		lines = append(lines, l)
	}
	isInsn := func(l string) bool {
		i := strings.IndexByte(l, ':')
		_, err := strconv.Atoi(l[:max(i, 0)])
		return i > 0 && err == nil && strings.HasPrefix(l[i:], ": (")
	}
	end := len(lines)
	start := end
	for start > 0 && !isInsn(lines[start-1]) {
		start--
	}
	reason := strings.Join(lines[start:end], "; ")
	var at []string
	for i := start - 1; i >= 0 && len(at) < 3 && isInsn(lines[i]); i-- {
		// Drop the register state after ';': long, and in the reason.
		l, _, _ := strings.Cut(lines[i], ";")
		at = append([]string{strings.TrimSpace(l)}, at...)
	}
	s := reason
	if len(at) > 0 {
		s += " (at " + strings.Join(at, " | ") + ")"
	}
	if s == "" {
		s = ve.Error()
	}
	if len(s) > maxLen {
		s = s[:maxLen] + "…"
	}
	return s
}
