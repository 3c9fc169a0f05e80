package datapath

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxProgramSize bounds a custom program's object file.
const MaxProgramSize = 1 << 20

// programNameRE is the grammar's program name (pkg/rules): checked again
// here, since this is where the name becomes a file name.
var programNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ErrNoProgramDir is returned when a rule names a custom program and the
// agent has no program directory.
var ErrNoProgramDir = errors.New("no program directory: start the agent with --program-dir (the admin's ConfigMap of programs)")

// ReadProgramFile reads <dir>/<name>.o, the admin's custom program, and
// checks it before anything parses it: the name is a plain file name; the
// path, once symbolic links are resolved (a ConfigMap mount is made of
// them), stays inside dir; it is a regular file of at most MaxProgramSize
// bytes; it is a little-endian 64-bit ELF object for BPF. The file is
// opened once and checked through that descriptor. Nothing a pod owner
// writes reaches this: the annotation only names a file the admin put
// there.
func ReadProgramFile(dir, name string) ([]byte, error) {
	if dir == "" {
		return nil, ErrNoProgramDir
	}
	if !programNameRE.MatchString(name) {
		return nil, fmt.Errorf("program name %q is not a plain name (no dots or slashes)", name)
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("program directory %s: %w", dir, err)
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	path, err := filepath.EvalSymlinks(filepath.Join(root, name+".o"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no program %q: %s.o is not in the program directory %s", name, name, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("program %q: %w", name, err)
	}
	if rel, err := filepath.Rel(root, path); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return nil, fmt.Errorf("program %q resolves to %s, outside the program directory %s: refused", name, path, dir)
	}
	// Non-blocking: opening a FIFO planted there must not hang the agent;
	// the descriptor's own stat decides what it is.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("program %q: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("program %q: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("program %q (%s) is not a regular file", name, path)
	}
	if st.Size() > MaxProgramSize {
		return nil, fmt.Errorf("program %q is %d bytes, more than the %d-byte limit", name, st.Size(), MaxProgramSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxProgramSize+1))
	if err != nil {
		return nil, fmt.Errorf("program %q: %w", name, err)
	}
	if len(data) > MaxProgramSize {
		return nil, fmt.Errorf("program %q grew beyond the %d-byte limit while read", name, MaxProgramSize)
	}
	if err := checkBPFELF(data); err != nil {
		return nil, fmt.Errorf("program %q: %w", name, err)
	}
	return data, nil
}

// checkBPFELF checks the ELF identification and machine: a 64-bit,
// little-endian ELF relocatable object for EM_BPF (247).
func checkBPFELF(b []byte) error {
	const emBPF = 247
	if len(b) < 20 || !bytes.Equal(b[:4], []byte("\x7fELF")) {
		return errors.New("not an ELF object file (compile it with clang -target bpf)")
	}
	if b[4] != 2 || b[5] != 1 {
		return errors.New("not a 64-bit little-endian ELF object (compile it with clang -target bpfel)")
	}
	if m := binary.LittleEndian.Uint16(b[18:]); m != emBPF {
		return fmt.Errorf("an ELF object for machine %d, not BPF (%d)", m, emBPF)
	}
	return nil
}

// programDigest identifies an object file's content and its parameters,
// so that a changed ConfigMap (or parameter) is loaded again.
func programDigest(data []byte, params string) string {
	h := sha256.New()
	h.Write(data)
	h.Write([]byte{0})
	h.Write([]byte(params))
	return fmt.Sprintf("%x", h.Sum(nil)[:6])
}
