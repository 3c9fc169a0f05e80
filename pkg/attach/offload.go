package attach

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtool commands (linux/ethtool.h) for the TX checksum offload feature.
const (
	ethtoolGTXCSUM = 0x16
	ethtoolSTXCSUM = 0x17
)

type ethtoolValue struct {
	cmd  uint32
	data uint32
}

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// TxChecksum reports whether the interface (by name, in the calling
// thread's netns) leaves L4 checksums to the device (tx-checksumming on).
func TxChecksum(ifname string) (bool, error) {
	v, err := ethtool(ifname, ethtoolValue{cmd: ethtoolGTXCSUM})
	return v != 0, err
}

// SetTxChecksum turns TX checksum offload on or off, as `ethtool -K IF tx
// on|off`. Off, the stack computes every checksum in software, so packets
// leave complete (CHECKSUM_NONE) instead of CHECKSUM_PARTIAL: what a
// corrupt rule on pod egress needs for the receiver to notice (and, as the
// kernel also drops TSO without it, the pod's TCP sends MSS-sized skbs).
func SetTxChecksum(ifname string, on bool) error {
	var d uint32
	if on {
		d = 1
	}
	_, err := ethtool(ifname, ethtoolValue{cmd: ethtoolSTXCSUM, data: d})
	return err
}

func ethtool(ifname string, v ethtoolValue) (uint32, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("attach: ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	var ifr ifreqData
	if len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("attach: interface name %q too long", ifname)
	}
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&v)
	if errno != 0 {
		return 0, fmt.Errorf("attach: ethtool %#x on %s: %w", v.cmd, ifname, errno)
	}
	return v.data, nil
}
