//go:build baseline

package main

import "github.com/kubeshaper/kubeshaper/pkg/datapath"

// The code before issue 12: fixed sizes (65,536 entries per map).
func openDatapath(pins string, capacity int) (*datapath.Datapath, error) {
	return datapath.Open(pins)
}
