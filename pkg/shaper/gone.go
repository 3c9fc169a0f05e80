package shaper

import (
	"errors"

	"golang.org/x/sys/unix"
)

// isGone reports an error that only says the interface or netns no longer
// exists: there is nothing left to clean up there.
func isGone(err error) bool {
	return errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}
