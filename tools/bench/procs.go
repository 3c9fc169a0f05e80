package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The benchmark's child processes (iperf3, ping, the UDP tools, the CLI):
// each started in its own process group, tracked, and ended by PID on
// exit (the topology itself is tests/netlab's: topo.go).

// cleanupCmd runs one cleanup command (after killAll closed the registry),
// killing it by PID if it outlives its timeout.
func cleanupCmd(timeout time.Duration, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	timer := time.AfterFunc(timeout, func() { killGroup(cmd) })
	err := cmd.Wait()
	timer.Stop()
	if err != nil {
		return fmt.Errorf("%v: %s", err, firstLine(buf.String()))
	}
	return nil
}

// runCmd runs a command to completion and returns its combined output; the
// error quotes the command and its output. The child is tracked like every
// other (ended by PID on exit), and killed when the timeout passes.
func runCmd(timeout time.Duration, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := children.start(cmd); err != nil {
		return "", fmt.Errorf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	timer := time.AfterFunc(timeout, func() { killGroup(cmd) })
	err := cmd.Wait()
	timer.Stop()
	children.done(cmd)
	out := buf.String()
	if err != nil {
		msg := strings.TrimSpace(out)
		if len(msg) > 400 {
			msg = msg[:400] + "…"
		}
		return out, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, msg)
	}
	return out, nil
}

// children are all the processes this program starts.
var children = newProcs()

// procs tracks the long-running processes we start, so that they are ended
// by PID on exit.
type procs struct {
	mu     sync.Mutex
	live   map[*exec.Cmd]bool
	closed bool // cleanup has begun: no new processes
}

func newProcs() *procs { return &procs{live: map[*exec.Cmd]bool{}} }

func (p *procs) start(cmd *exec.Cmd) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("shutting down")
	}
	// Its own process group: ending it ends what it started too (a
	// script's children), and nothing else.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.live[cmd] = true
	return nil
}

func (p *procs) done(cmd *exec.Cmd) {
	p.mu.Lock()
	delete(p.live, cmd)
	p.mu.Unlock()
}

func (p *procs) running(cmd *exec.Cmd) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live[cmd]
}

// killAll stops new starts, sends SIGTERM to each process we started, then
// SIGKILL to those still alive a second later.
func (p *procs) killAll() {
	p.mu.Lock()
	p.closed = true
	var pids []int
	for c := range p.live {
		if c.Process != nil {
			pids = append(pids, c.Process.Pid)
		}
	}
	p.mu.Unlock()
	for _, pid := range pids {
		_ = syscall.Kill(-pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) && syscall.Kill(pid, 0) == nil && !zombie(pid) {
			time.Sleep(20 * time.Millisecond)
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL) // the group: leader and what it started
	}
}

// killGroup ends a child we started and its own children (its process
// group, created at start).
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z'
	}
	return false
}
