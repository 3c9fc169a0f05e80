// Command pause is the sandbox ("pause") container of kubeshaper's local
// cluster: it holds the pod's namespaces open, reaps the zombies of a shared
// PID namespace, and exits on SIGTERM or SIGINT. It is built statically
// into the image kubeshaper/pause:dev (tools/cluster/images.sh), which
// containerd's sandbox_image names, so no registry is needed.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
