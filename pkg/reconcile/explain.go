package reconcile

import (
	"errors"

	"golang.org/x/sys/unix"
)

// explain is the text of an ApplyFailed Event: the error, plus what the
// kernel's errno means where the wording of the layers below misleads.
func explain(err error) string {
	msg := err.Error()
	// A BPF hash map answers an insert into a full map with E2BIG, which
	// cilium/ebpf words "key too big for map".
	if errors.Is(err, unix.E2BIG) {
		msg += " (a kubeshaper BPF map is full: it is sized for the Node's allocatable pods, or --max-pods; entries no pod wants are collected every --resync; a larger --max-pods migrates the pinned maps at the agent's next start, keeping rules and counters)"
	}
	return msg
}
