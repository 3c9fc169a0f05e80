package kubeenv

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// KillAPIServer kills kube-apiserver with SIGKILL (by PID) and waits for
// it to be reaped: an abrupt outage. StopAPIServer's SIGTERM lets the
// apiserver drain open watches for up to its 15 s grace period, during
// which clients that are already connected still get served; here every
// connection dies at once and new ones are refused until StartAPIServer.
func (e *Env) KillAPIServer() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.apiserver
	if !p.running() {
		return nil
	}
	t0 := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		return errors.New("kube-apiserver not reaped 10 s after SIGKILL")
	}
	e.opts.Logf("kube-apiserver (pid %d) killed in %s", p.pid(), time.Since(t0).Round(time.Millisecond))
	return nil
}
