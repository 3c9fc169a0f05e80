//go:build !baseline

package main

import "github.com/kubeshaper/kubeshaper/pkg/datapath"

func openDatapath(pins string, capacity int) (*datapath.Datapath, error) {
	return datapath.OpenWith(pins, datapath.Options{Entries: datapath.EntriesForPods(capacity)})
}
