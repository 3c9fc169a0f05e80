package datapath

import (
	"errors"

	"golang.org/x/sys/unix"
)

func isE2BIG(err error) bool { return errors.Is(err, unix.E2BIG) }
