// Command reaper runs one command as a child subreaper, for the local
// cluster's containerd: the shims containerd starts daemonise and would
// otherwise be re-parented to PID 1 (which reaps lazily here, leaving
// zombies) and outlive containerd unseen. Under reaper they stay its
// children, so stopping reaper stops all of them, by PID:
//
//	reaper [-grace 20s] -- containerd --config ...
//
// SIGTERM or SIGINT is forwarded to the command; once it has exited (or
// after -grace, SIGKILL), every process still re-parented to reaper (shims,
// and containers whose shim died) gets SIGTERM, then SIGKILL after -grace.
// Zombies are reaped all along. Exit status: the command's.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	grace := flag.Duration("grace", 20*time.Second, "how long a process gets between SIGTERM and SIGKILL")
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: reaper [-grace D] -- COMMAND [ARGS...]")
		os.Exit(2)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "reaper: PR_SET_CHILD_SUBREAPER: %v\n", err)
		os.Exit(1)
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)

	path := args[0]
	if !strings.Contains(path, "/") {
		p, err := lookPath(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "reaper: %v\n", err)
			os.Exit(127)
		}
		path = p
	}
	proc, err := os.StartProcess(path, args, &os.ProcAttr{Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}})
	if err != nil {
		fmt.Fprintf(os.Stderr, "reaper: %v\n", err)
		os.Exit(127)
	}
	mainPID := proc.Pid
	status := -1
	var killAt time.Time // when the main child gets SIGKILL

	for status < 0 {
		var tick <-chan time.Time
		if !killAt.IsZero() {
			tick = time.After(time.Until(killAt))
		}
		select {
		case s := <-sigs:
			if s == syscall.SIGCHLD {
				status = reap(mainPID, status)
				continue
			}
			syscall.Kill(mainPID, s.(syscall.Signal))
			if killAt.IsZero() {
				killAt = time.Now().Add(*grace)
			}
		case <-tick:
			syscall.Kill(mainPID, syscall.SIGKILL)
			killAt = time.Now().Add(time.Hour)
		}
		status = reap(mainPID, status)
	}

	// The command is gone: stop whatever it left behind.
	deadline := time.Now().Add(*grace)
	sig := syscall.SIGTERM
	for {
		reap(mainPID, status)
		kids := children()
		if len(kids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			sig = syscall.SIGKILL
		}
		for _, pid := range kids {
			syscall.Kill(pid, sig)
		}
		time.Sleep(100 * time.Millisecond)
	}
	os.Exit(status)
}

// reap collects every exited child; it returns the main child's exit
// status once it is among them (status otherwise).
func reap(mainPID, status int) int {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return status
		}
		if pid == mainPID {
			switch {
			case ws.Exited():
				status = ws.ExitStatus()
			case ws.Signaled():
				status = 128 + int(ws.Signal())
			default:
				status = 1
			}
		}
	}
}

// children lists the live processes whose parent is this one.
func children() []int {
	self := os.Getpid()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == self {
			out = append(out, pid)
		}
	}
	return out
}

func lookPath(name string) (string, error) {
	for _, dir := range strings.Split(os.Getenv("PATH"), ":") {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in $PATH", name)
}
