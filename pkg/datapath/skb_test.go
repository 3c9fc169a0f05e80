package datapath

import (
	"encoding/binary"
	"net"
)

// skbCtx mirrors struct __sk_buff (UAPI) as BPF_PROG_TEST_RUN takes it.
// Only ifindex, tstamp, gso_segs and gso_size may be non-zero here.
type skbCtx struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto uint32
	Priority, IngressIfindex, Ifindex, TCIndex                                  uint32
	CB                                                                          [5]uint32
	Hash, TCClassid, Data, DataEnd, NapiID                                      uint32
	Family, RemoteIP4, LocalIP4                                                 uint32
	RemoteIP6, LocalIP6                                                         [4]uint32
	RemotePort, LocalPort, DataMeta                                             uint32
	FlowKeys                                                                    uint64
	Tstamp                                                                      uint64
	WireLen, GSOSegs                                                            uint32
	Sk                                                                          uint64
	GSOSize                                                                     uint32
	TstampType                                                                  uint8
	_                                                                           [3]uint8
	HWTstamp                                                                    uint64
}

const loIfindex = 1 // BPF_PROG_TEST_RUN runs on lo unless told otherwise

// udpPacket is Ethernet + IPv4 + UDP with size bytes in all.
func udpPacket(size int) []byte {
	p := make([]byte, size)
	copy(p[0:6], net.HardwareAddr{2, 0, 0, 0, 0, 2})
	copy(p[6:12], net.HardwareAddr{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(p[12:], 0x0800)
	ip := p[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	ip[8] = 64
	ip[9] = 17 // UDP
	copy(ip[12:16], net.IPv4(10, 0, 0, 1).To4())
	copy(ip[16:20], net.IPv4(10, 0, 0, 2).To4())
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 5201)
	binary.BigEndian.PutUint16(udp[4:], uint16(size-34))
	return p
}

// tcpPacket is Ethernet + IPv4 + TCP (32-byte header, as with timestamps)
// carrying payload bytes.
func tcpPacket(payload int) []byte {
	size := 14 + 20 + 32 + payload
	p := udpPacket(size)
	p[14+9] = 6 // TCP
	tcp := p[34:]
	binary.BigEndian.PutUint32(tcp[4:], 1)
	tcp[12] = 8 << 4 // doff = 8 words
	tcp[13] = 0x10   // ACK
	return p
}

// udp6Packet is Ethernet + IPv6 + UDP with size bytes in all.
func udp6Packet(size int, src, dst net.IP, sport, dport uint16) []byte {
	p := make([]byte, size)
	binary.BigEndian.PutUint16(p[12:], 0x86dd)
	ip := p[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(size-54))
	ip[6] = 17
	ip[7] = 64
	copy(ip[8:24], src.To16())
	copy(ip[24:40], dst.To16())
	udp := ip[40:]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(size-54))
	return p
}

// tcp6Packet is Ethernet + IPv6 + TCP (20-byte header) with flags.
func tcp6Packet(payload int, src, dst net.IP, sport, dport uint16, flags byte) []byte {
	size := 14 + 40 + 20 + payload
	p := udp6Packet(size, src, dst, sport, dport)
	p[14+6] = 6
	tcp := p[54:]
	tcp[12] = 5 << 4
	tcp[13] = flags
	return p
}
